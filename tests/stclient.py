"""A raw Streamlit browser-protocol client for tests: the ``/_stcore/stream`` websocket with protobuf messages.

It does what a browser tab does, and what an attacker's script can do: run the script (a page), set widget values,
reconnect to an existing session id, send any ``BackMsg``. No JavaScript and no browser.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from streamlit.proto.BackMsg_pb2 import BackMsg
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg
from streamlit.proto.WidgetStates_pb2 import WidgetState
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect


@dataclass
class Run:
    """What one script run sent: elements as ``(kind, proto)`` and the message types seen."""

    elements: list[tuple[str, Any]] = field(default_factory=list)
    types: list[str] = field(default_factory=list)
    fragment_ids: set[str] = field(default_factory=set)
    blocks: list[Any] = field(default_factory=list)
    """The containers the run added (``Block`` protos: expanders, columns, forms...), in order."""

    def of(self, kind: str) -> list[Any]:
        """The elements of one kind (``button``, ``download_button``, ``text_input``, ``markdown``...)."""
        return [e for k, e in self.elements if k == kind]

    def labels(self, kind: str) -> list[str]:
        """The labels of the elements of one kind."""
        return [e.label for e in self.of(kind)]

    def text(self) -> str:
        """Every markdown, alert and heading body of the run, joined."""
        parts = [e.body for k, e in self.elements if k in ("markdown", "alert", "heading")]
        return "\n".join(parts)


class StClient:
    """One websocket connection to a Streamlit server, optionally with a cookie and an existing session id."""

    def __init__(
        self, base: str, cookie: str | None = None, session_id: str | None = None, xsrf: str | None = None
    ) -> None:
        """``xsrf``: the XSRF token a browser sends (the ``_streamlit_xsrf`` cookie's value, which ``cookie`` must
        then hold), with the page's Origin: what Streamlit wants before it reads its login cookie."""
        ws_url = base.replace("http://", "ws://").rstrip("/") + "/_stcore/stream"
        headers = {"Cookie": cookie} if cookie else {}
        protocols = ["streamlit", xsrf or "no-xsrf-token", *([session_id] if session_id else [])]
        opening = connect(
            ws_url,
            additional_headers=headers,
            subprotocols=protocols,  # type: ignore[arg-type]
            max_size=None,
            open_timeout=30,
            origin=base.rstrip("/") if xsrf else None,  # type: ignore[arg-type]
        )
        self.ws: ClientConnection = opening.__enter__()
        self.session_id: str | None = session_id

    def send(self, msg: BackMsg) -> None:
        """Sends any BackMsg as it is."""
        self.ws.send(msg.SerializeToString())

    def run(
        self,
        page: str = "",
        widgets: list[WidgetState] | None = None,
        timeout: float = 120,
        fragment_id: str = "",
    ) -> Run:
        """Reruns the script on ``page`` (url path, "" for the default) with widget values; waits for the end.

        With ``fragment_id`` only that fragment reruns (what a key press in a fragment sends).
        """
        msg = BackMsg()
        msg.rerun_script.query_string = ""
        msg.rerun_script.page_name = page
        if fragment_id:
            msg.rerun_script.fragment_id = fragment_id
        if widgets:
            msg.rerun_script.widget_states.widgets.extend(widgets)
        self.send(msg)
        return self.collect(timeout)

    def collect(self, timeout: float = 120) -> Run:
        """Reads ForwardMsgs until a script run finishes (a run that calls st.rerun is followed to its end)."""
        run = Run()
        while True:
            try:
                data = self.ws.recv(timeout=timeout)
            except (TimeoutError, ConnectionClosed):
                return run
            fwd = ForwardMsg()
            fwd.ParseFromString(data if isinstance(data, bytes) else data.encode())
            kind = fwd.WhichOneof("type")
            run.types.append(kind or "")
            if kind == "new_session":
                self.session_id = fwd.new_session.initialize.session_id or self.session_id
                run.elements.clear()  # a new run starts (also after st.rerun): keep only the last run's elements
                run.blocks.clear()
            if kind == "delta" and fwd.delta.fragment_id:
                run.fragment_ids.add(fwd.delta.fragment_id)
            if kind == "delta" and fwd.delta.WhichOneof("type") == "add_block":
                run.blocks.append(fwd.delta.add_block)
            if kind == "delta" and fwd.delta.WhichOneof("type") == "new_element":
                element = fwd.delta.new_element
                name = element.WhichOneof("type")
                run.elements.append((name, getattr(element, name)))
            elif kind == "script_finished":
                from streamlit.proto.ForwardMsg_pb2 import ForwardMsg as F

                if fwd.script_finished != F.FINISHED_EARLY_FOR_RERUN:
                    return run

    def close(self) -> None:
        """Closes the connection."""
        self.ws.close()


def text_value(element_id: str, value: str) -> WidgetState:
    """A text widget's value."""
    return WidgetState(id=element_id, string_value=value)


def click(element_id: str) -> WidgetState:
    """A button press (a form's submit button too)."""
    return WidgetState(id=element_id, trigger_value=True)


def submit_code(client: StClient, run: Run, code: str, label: str, page: str = "") -> Run:
    """Types ``code`` into the text field labelled ``label`` and presses its form's Enter button."""
    field_ = next(e for e in run.of("text_input") if e.label == label)
    button = next(e for e in run.of("button") if e.is_form_submitter and e.form_id == field_.form_id)
    return client.run(page, [text_value(field_.id, code), click(button.id)])
