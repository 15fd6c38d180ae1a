// The demo page: a plain ChatKit protocol client. Every read and write is a POST to /chatkit;
// streamed answers arrive as server-sent events; images go to the upload URL that
// attachments.create hands out. No framework, no external requests.
"use strict";

const USER_HEADER = "X-Demo-User";
const $ = (id) => document.getElementById(id);
const USER_NAME = /^[A-Za-z0-9_.@-]{1,64}$/;  // what the server accepts (demo/app.py)
const state = { user: "alice", threadId: null, threadsAfter: null, pending: [], busy: false };

// --- the protocol -------------------------------------------------------------------------

function user() {
  return state.user;  // the name last accepted, not whatever is being typed
}

async function post(request) {
  const response = await fetch("/chatkit", {
    method: "POST",
    headers: { "Content-Type": "application/json", [USER_HEADER]: user() },
    body: JSON.stringify(request),
  });
  if (!response.ok) {
    const body = await response.json().catch(() => ({}));
    const error = new Error(body.error || `${request.type}: HTTP ${response.status}`);
    error.status = response.status;
    throw error;
  }
  return response;
}

async function ask(request) {
  return (await post(request)).json();
}

// Yields each event of a streamed answer (text/event-stream: "data: {json}" blocks).
async function* stream(request) {
  const reader = (await post(request)).body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    buffer += decoder.decode(value || new Uint8Array(), { stream: !done });
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const data = block
        .split("\n")
        .filter((line) => line.startsWith("data:"))
        .map((line) => line.slice(5).trimStart())
        .join("\n");
      if (data) yield JSON.parse(data);
    }
    if (done) return;
  }
}

// --- threads ------------------------------------------------------------------------------

async function loadThreads(more = false) {
  const params = { limit: 20, order: "desc", after: more ? state.threadsAfter : null };
  const page = await ask({ type: "threads.list", params });
  if (!more) $("threads").replaceChildren();
  for (const thread of page.data) $("threads").append(threadEntry(thread));
  state.threadsAfter = page.has_more ? page.after : null;
  $("more-threads").hidden = !page.has_more;
  markCurrent();
  return $("threads").children.length;
}

function threadEntry(thread) {
  const entry = document.createElement("li");
  const button = document.createElement("button");
  button.type = "button";
  button.dataset.threadId = thread.id;
  button.textContent = thread.title || "Untitled";
  const when = document.createElement("small");
  when.textContent = new Date(thread.created_at).toLocaleString();
  button.append(when);
  button.addEventListener("click", () => openThread(thread.id, thread.title));
  entry.append(button);
  return entry;
}

function markCurrent() {
  for (const button of $("threads").querySelectorAll("button")) {
    button.setAttribute("aria-current", String(button.dataset.threadId === state.threadId));
  }
}

async function openThread(threadId, title) {
  state.threadId = threadId;
  history.replaceState(null, "", threadId ? `#${threadId}` : location.pathname);
  $("items").replaceChildren();
  $("thread-title").textContent = threadId ? title || "Untitled" : "New thread";
  markCurrent();
  if (!threadId) return;
  let thread;
  try {  // the thread and its first items
    thread = await ask({ type: "threads.get_by_id", params: { thread_id: threadId } });
  } catch (error) {
    if (error.status !== 404) throw error;
    await forgetThread(threadId, "That thread does not exist, or is another user's.");
    return;
  }
  $("thread-title").textContent = thread.title || "Untitled";
  let page = thread.items;
  page.data.forEach(showItem);
  while (page.has_more) {  // the rest, oldest first, one page at a time
    const params = { thread_id: threadId, limit: 50, order: "asc", after: page.after };
    page = await ask({ type: "items.list", params });
    page.data.forEach(showItem);
  }
  setStatus(`Loaded ${$("items").children.length} item(s) from the store.`);
}

async function threadExists(threadId) {
  try {
    await ask({ type: "threads.get_by_id", params: { thread_id: threadId } });
    return true;
  } catch (error) {
    if (error.status === 404) return false;
    throw error;
  }
}

// A thread that is gone (deleted elsewhere, or a link to another user's): back to a new thread,
// so that the next Send starts one instead of failing again.
async function forgetThread(threadId, why) {
  if (state.threadId === threadId) await openThread(null);
  await loadThreads();
  setStatus(why, true);
}

// --- items --------------------------------------------------------------------------------

function showItem(item) {
  const existing = document.getElementById(`item-${item.id}`);
  const element = renderItem(item);
  if (existing) existing.replaceWith(element);
  else $("items").append(element);
  element.scrollIntoView({ block: "end" });
}

function renderItem(item) {
  const element = document.createElement("li");
  element.id = `item-${item.id}`;
  const kind = { user_message: "user", assistant_message: "assistant" }[item.type] || "other";
  element.className = `item ${kind}`;
  const who = document.createElement("span");
  who.className = "who";
  who.textContent = kind === "user" ? user() : kind === "assistant" ? "assistant" : item.type;
  element.append(who);
  (item.content || []).forEach((part, index) => {
    const text = document.createElement("p");
    text.dataset.index = index;
    text.textContent = part.text || "";
    element.append(text);
  });
  for (const attachment of item.attachments || []) element.append(renderAttachment(attachment));
  return element;
}

function renderAttachment(attachment) {
  if (attachment.type === "image" && attachment.preview_url) {
    const image = document.createElement("img");
    image.src = attachment.preview_url;  // a signed, expiring URL, re-signed on every load
    image.alt = attachment.name;
    image.className = "preview";
    return image;
  }
  const file = document.createElement("span");
  file.className = "file";
  file.textContent = `📎 ${attachment.name}`;
  return file;
}

function applyUpdate(itemId, update) {
  if (update.type !== "assistant_message.content_part.text_delta") return;
  const element = document.getElementById(`item-${itemId}`);
  const part = element && element.querySelector(`p[data-index="${update.content_index}"]`);
  if (part) part.textContent += update.delta;
}

// --- sending ------------------------------------------------------------------------------

async function send(event) {
  event.preventDefault();
  const text = $("message").value.trim();
  if (state.busy || (!text && !state.pending.length)) return;
  const input = {
    content: [{ type: "input_text", text }],
    attachments: state.pending.map((attachment) => attachment.id),
    inference_options: {},
  };
  const sentTo = state.threadId;
  const request = sentTo
    ? { type: "threads.add_user_message", params: { thread_id: sentTo, input } }
    : { type: "threads.create", params: { input } };
  setBusy(true);
  setStatus("Sending…");
  try {
    for await (const streamed of stream(request)) handleEvent(streamed);
    $("message").value = "";
    state.pending = [];
    $("pending").replaceChildren();
    setStatus("Answer stored.");
    await loadThreads();
  } catch (error) {
    setStatus(error.message, true);
    if (sentTo && !(await threadExists(sentTo).catch(() => true))) {
      const why = "That thread no longer exists (deleted, or another user's): your message was " +
        "not sent. Send it again to start a new thread.";
      await forgetThread(sentTo, why);
    }
  } finally {
    setBusy(false);
  }
}

function handleEvent(event) {
  switch (event.type) {
    case "thread.created":
      state.threadId = event.thread.id;
      history.replaceState(null, "", `#${event.thread.id}`);
      $("thread-title").textContent = event.thread.title || "Untitled";
      break;
    case "thread.updated":
      $("thread-title").textContent = event.thread.title || "Untitled";
      break;
    case "thread.item.added":
    case "thread.item.done":
      showItem(event.item);
      break;
    case "thread.item.updated":
      applyUpdate(event.item_id, event.update);
      break;
    case "progress_update":
      setStatus(event.text);
      break;
    case "error":
      throw new Error(event.message || `the server failed (${event.code})`);
  }
}

// --- attachments --------------------------------------------------------------------------

async function attach(file) {
  setStatus(`Uploading ${file.name}…`);
  const params = { name: file.name, size: file.size, mime_type: file.type || "application/octet-stream" };
  let attachment = await ask({ type: "attachments.create", params });
  const upload = attachment.upload_descriptor;
  if (upload) {
    const response = upload.method === "PUT"
      ? await fetch(upload.url, { method: "PUT", headers: upload.headers || {}, body: file })
      : await fetch(sameServer(upload.url), { method: "POST", body: formWith(file) });
    if (!response.ok) {
      const body = await response.json().catch(() => ({}));
      throw new Error(body.error || `upload failed: HTTP ${response.status}`);
    }
    if (upload.method === "POST") attachment = await response.json();
  }
  state.pending.push(attachment);
  const entry = document.createElement("li");
  entry.append(renderAttachment(attachment), attachment.name);
  $("pending").append(entry);
  setStatus(`${file.name} uploaded; it goes with your next message.`);
}

function formWith(file) {
  const form = new FormData();
  form.append("file", file, file.name);
  return form;
}

// The demo signs URLs for the address it printed; a browser that reached it under another
// loopback name (localhost vs 127.0.0.1) sends uploads to this page's own origin instead.
function sameServer(url) {
  const target = new URL(url);
  const loopback = ["localhost", "127.0.0.1", "[::1]"];
  if (loopback.includes(target.hostname) && loopback.includes(location.hostname)) {
    return location.origin + target.pathname + target.search;
  }
  return url;
}

// --- page ---------------------------------------------------------------------------------

function setStatus(text, error = false) {
  $("status").textContent = text;
  $("status").classList.toggle("error", error);
}

function setBusy(busy) {
  state.busy = busy;
  $("send").disabled = busy;
}

async function switchUser() {
  const name = $("user").value.trim();
  if (!USER_NAME.test(name)) {
    $("user").value = state.user;
    setStatus(`"${name}" is not a demo user name: use 1-64 letters, digits or _.@- ` +
      `(still ${state.user}).`, true);
    return;
  }
  state.user = name;
  localStorage.setItem("chatkit-demo-user", name);
  state.pending = [];  // uploaded as the previous user: not this one's to send
  $("pending").replaceChildren();
  await openThread(null);
  const count = await loadThreads();
  const more = state.threadsAfter ? "+" : "";
  setStatus(`Now ${name} (a demo name, not authentication): ${count}${more} thread(s).`);
}

async function start() {
  const saved = localStorage.getItem("chatkit-demo-user");
  state.user = saved && USER_NAME.test(saved) ? saved : "alice";
  $("user").value = state.user;
  $("composer").addEventListener("submit", send);
  $("new-thread").addEventListener("click", () => openThread(null));
  $("more-threads").addEventListener("click", () => loadThreads(true));
  $("user").addEventListener("change", () => switchUser().catch((e) => setStatus(e.message, true)));
  window.addEventListener("hashchange", () => {  // a thread link followed in this tab
    const threadId = location.hash.slice(1) || null;
    if (threadId !== state.threadId) openThread(threadId).catch((e) => setStatus(e.message, true));
  });
  $("file").addEventListener("change", async () => {
    try {
      for (const file of $("file").files) await attach(file);
    } catch (error) {
      setStatus(error.message, true);
    } finally {
      $("file").value = "";
    }
  });
  const about = await fetch("/demo/about").then((r) => r.json());
  $("about").append(` Responder: ${about.responder}. Attachments: ${about.attachments}.`);
  await loadThreads();
  const fromUrl = location.hash.slice(1);
  if (fromUrl) await openThread(fromUrl);
  document.body.dataset.ready = "true";
}

start().catch((error) => setStatus(error.message, true));
