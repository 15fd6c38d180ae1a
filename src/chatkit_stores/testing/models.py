"""Builders for every ChatKit model a store keeps, each with fresh random ids."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime, timedelta, timezone

from chatkit.types import (
    Annotation,
    AssistantMessageContent,
    AssistantMessageItem,
    Attachment,
    AttachmentUploadDescriptor,
    ClientToolCallItem,
    CustomTask,
    DurationSummary,
    EndOfTurnItem,
    EntitySource,
    FileAttachment,
    FileSource,
    GeneratedImage,
    GeneratedImageItem,
    HiddenContextItem,
    ImageAttachment,
    InferenceOptions,
    SDKHiddenContextItem,
    SearchTask,
    TaskItem,
    ThoughtTask,
    ThreadItem,
    ThreadMetadata,
    ToolChoice,
    URLSource,
    UserMessageItem,
    UserMessageTagContent,
    UserMessageTextContent,
    WidgetItem,
    Workflow,
    WorkflowItem,
)
from chatkit.widgets import Card, Col, Text
from pydantic import AnyUrl

T0 = datetime(2025, 3, 14, 15, 9, 26, 535897)
"""A fixed naive timestamp with microseconds; tests add offsets to it."""


def new_id(prefix: str) -> str:
    """Return ``prefix_`` plus a random hex suffix, unique per call."""
    return f"{prefix}_{uuid.uuid4().hex}"


def thread(
    thread_id: str | None = None, created_at: datetime = T0, title: str | None = "A thread"
) -> ThreadMetadata:
    """A thread with metadata."""
    return ThreadMetadata(
        id=thread_id or new_id("thr"),
        title=title,
        created_at=created_at,
        metadata={"topic": "tests", "nested": {"n": [1, 2.5, None, True]}},
    )


def file_attachment(
    attachment_id: str | None = None, thread_id: str | None = None
) -> FileAttachment:
    """A file attachment with integration metadata."""
    return FileAttachment(
        id=attachment_id or new_id("atc"),
        name="report final (v2).pdf",
        mime_type="application/pdf",
        thread_id=thread_id,
        metadata={"size": 1234, "source": "upload"},
    )


def image_attachment(
    attachment_id: str | None = None, thread_id: str | None = None
) -> ImageAttachment:
    """An image attachment still waiting for its two-phase upload."""
    attachment_id = attachment_id or new_id("atc")
    return ImageAttachment(
        id=attachment_id,
        name="cat.png",
        mime_type="image/png",
        thread_id=thread_id,
        preview_url=AnyUrl(f"https://files.example.com/preview/{attachment_id}?sig=abc"),
        upload_descriptor=AttachmentUploadDescriptor(
            url=AnyUrl(f"https://files.example.com/upload/{attachment_id}"),
            method="PUT",
            headers={"Content-Type": "image/png"},
        ),
    )


ATTACHMENT_BUILDERS: dict[str, Callable[..., Attachment]] = {
    "file": file_attachment,
    "image": image_attachment,
}


def user_message(thread_id: str, created_at: datetime = T0, text: str = "Hello") -> UserMessageItem:
    """A user message with text, a tag, a quote, inference options and an attachment."""
    return UserMessageItem(
        id=new_id("msg"),
        thread_id=thread_id,
        created_at=created_at,
        content=[
            UserMessageTextContent(text=text),
            UserMessageTagContent(id="t1", text="@doc", data={"k": [1, "v"]}, interactive=True),
        ],
        attachments=[file_attachment(thread_id=thread_id)],
        quoted_text="earlier words",
        inference_options=InferenceOptions(tool_choice=ToolChoice(id="search"), model="gpt-x"),
    )


def assistant_message(
    thread_id: str, created_at: datetime = T0, text: str = "Hi"
) -> AssistantMessageItem:
    """An assistant message with annotations of every source type."""
    return AssistantMessageItem(
        id=new_id("msg"),
        thread_id=thread_id,
        created_at=created_at,
        content=[
            AssistantMessageContent(
                text=text,
                annotations=[
                    Annotation(
                        source=URLSource(title="Web", url="https://example.com/a?b=c"), index=2
                    ),
                    Annotation(source=FileSource(title="File", filename="notes.txt")),
                    Annotation(source=EntitySource(title="Ent", id="e1", data={"x": 1})),
                ],
            )
        ],
    )


def client_tool_call(thread_id: str, created_at: datetime = T0) -> ClientToolCallItem:
    """A completed client tool call with structured arguments and output."""
    return ClientToolCallItem(
        id=new_id("tc"),
        thread_id=thread_id,
        created_at=created_at,
        status="completed",
        call_id="call_1",
        name="get_weather",
        arguments={"city": "Zürich", "days": 3},
        output={"temps": [1.5, -2], "ok": True},
    )


def widget(thread_id: str, created_at: datetime = T0) -> WidgetItem:
    """A widget item with a nested card."""
    return WidgetItem(
        id=new_id("wdg"),
        thread_id=thread_id,
        created_at=created_at,
        widget=Card(
            children=[
                Col(
                    padding={"x": 4, "y": 3},
                    children=[Text(value="Title", weight="medium", size="sm"), Text(value="body")],
                )
            ]
        ),
        copy_text="Title body",
    )


def generated_image(thread_id: str, created_at: datetime = T0) -> GeneratedImageItem:
    """A generated image item."""
    return GeneratedImageItem(
        id=new_id("img"),
        thread_id=thread_id,
        created_at=created_at,
        image=GeneratedImage(id="gi_1", url="https://images.example.com/gi_1.png"),
    )


def workflow(thread_id: str, created_at: datetime = T0) -> WorkflowItem:
    """A reasoning workflow with several task kinds and a summary."""
    return WorkflowItem(
        id=new_id("wf"),
        thread_id=thread_id,
        created_at=created_at,
        workflow=Workflow(
            type="reasoning",
            tasks=[
                ThoughtTask(content="thinking…", status_indicator="complete"),
                SearchTask(queries=["q"], sources=[URLSource(title="S", url="https://s.example")]),
                CustomTask(title="Custom", content="c"),
            ],
            summary=DurationSummary(duration=12),
            expanded=True,
        ),
    )


def task(thread_id: str, created_at: datetime = T0) -> TaskItem:
    """A standalone task item."""
    return TaskItem(
        id=new_id("tsk"),
        thread_id=thread_id,
        created_at=created_at,
        task=CustomTask(title="Task", content="done", status_indicator="loading"),
    )


def hidden_context(thread_id: str, created_at: datetime = T0) -> HiddenContextItem:
    """A hidden context item with arbitrary JSON content."""
    return HiddenContextItem(
        id=new_id("hc"), thread_id=thread_id, created_at=created_at, content={"secret": [1, 2]}
    )


def sdk_hidden_context(thread_id: str, created_at: datetime = T0) -> SDKHiddenContextItem:
    """An Agents SDK hidden context item."""
    return SDKHiddenContextItem(
        id=new_id("shcx"), thread_id=thread_id, created_at=created_at, content="sdk context"
    )


def end_of_turn(thread_id: str, created_at: datetime = T0) -> EndOfTurnItem:
    """An end-of-turn marker."""
    return EndOfTurnItem(id=new_id("eot"), thread_id=thread_id, created_at=created_at)


ITEM_BUILDERS: dict[str, Callable[..., ThreadItem]] = {
    "user_message": user_message,
    "assistant_message": assistant_message,
    "client_tool_call": client_tool_call,
    "widget": widget,
    "generated_image": generated_image,
    "workflow": workflow,
    "task": task,
    "hidden_context_item": hidden_context,
    "sdk_hidden_context": sdk_hidden_context,
    "end_of_turn": end_of_turn,
}
"""One builder per ThreadItem type, keyed by the item's ``type``."""

try:  # structured input arrived in openai-chatkit 1.6.x
    from chatkit.types import (
        StructuredInputFreeform,
        StructuredInputItem,
        StructuredInputMultipleChoice,
        StructuredInputMultipleChoiceOption,
    )
except ImportError:  # pragma: no cover - older openai-chatkit
    pass
else:

    def structured_input(thread_id: str, created_at: datetime = T0) -> StructuredInputItem:
        """A pending structured-input question set."""
        return StructuredInputItem(
            id=new_id("si"),
            thread_id=thread_id,
            created_at=created_at,
            inputs=[
                StructuredInputMultipleChoice(
                    id="q1",
                    question="Pick",
                    options=[StructuredInputMultipleChoiceOption(value="a")],
                    multiple=True,
                ),
                StructuredInputFreeform(id="q2", question="Why?", description="free text"),
            ],
        )

    ITEM_BUILDERS["structured_input"] = structured_input

TIMESTAMPS: dict[str, datetime] = {
    "naive": T0,
    "utc": T0.replace(tzinfo=timezone.utc),
    "offset": T0.replace(tzinfo=timezone(timedelta(hours=5, minutes=30))),
    "negative_offset": T0.replace(tzinfo=timezone(timedelta(hours=-8))),
}
"""Naive and aware timestamps, all with microseconds."""

NASTY_TEXT = "quote ' \" back \\ emoji 😀🇨🇭 rtl \u202e newline \n tab \t %_ \U0010ffff"
"""Text a store must keep byte for byte."""

HOSTILE_IDS = [
    "it's",
    'say "hi"',
    "100%",
    "a_b",
    "a%",
    "robert'); DROP TABLE students;--",
    "x" * 255,
    "ÿ-éèê-中文-😀",
    "Case",
    "case",
    "trailing ",
    "trailing",
    "back\\slash",
]
"""Ids that break stores built with string SQL, LIKE, or case-insensitive/padded collations."""
