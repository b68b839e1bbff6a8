"""The Classroom's figure on a served app, through the browser protocol: opening its expander reruns the figure's
fragment alone (no table, form or thumbnail of the page is computed or sent again) and draws the figure."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.proto.WidgetStates_pb2 import WidgetState

from tests.apphelpers import stored_data
from tests.server import serve_app
from tests.stclient import StClient, submit_code
from tests.test_db_classes import _ingest
from tests.test_webapp_guard import CODE, OWNER_CODE, _cookie

pytestmark = pytest.mark.slow

EXPANDER = "Figure: the class mean, each student, or the lecture segments"


def test_opening_the_figure_reruns_its_fragment_alone(tmp_path: Path) -> None:
    data, _ = stored_data(tmp_path, lambda store: _ingest(store, study="default"))
    env = {"AFFECTLAB_ACCESS_CODE": CODE, "AFFECTLAB_OWNER_CODE": OWNER_CODE}
    env["STREAMLIT_SERVER_ENABLE_XSRF_PROTECTION"] = "false"
    with serve_app(data, tmp_path / "no-weights", tmp_path / "server.log", env=env) as (url, _proc):
        client = StClient(url, cookie=_cookie(url))  # signed in: a fragment reruns only for a signed-in session
        try:
            submit_code(client, client.run(), OWNER_CODE, "Study access code")
            page = client.run("classroom")
            assert "Students" in page.text() and not page.of("plotly_chart"), "the page, without the figure"
            figure = next(
                b.expandable
                for b in page.blocks
                if b.WhichOneof("type") == "expandable" and b.expandable.label == EXPANDER
            )
            assert len(page.fragment_ids) == 1, page.fragment_ids
            opened = client.run(
                "classroom",
                [WidgetState(id=figure.id, bool_value=True)],
                fragment_id=next(iter(page.fragment_ids)),
            )
        finally:
            client.close()
    assert [c.id for c in opened.of("plotly_chart")], "the figure is drawn once asked for"
    assert opened.fragment_ids == page.fragment_ids
    whole_page = ("Lecture segments", "Students", "Class over time")
    assert not [h for h in whole_page if h in opened.text()], "only the fragment reran"
    assert not opened.of("arrow_data_frame") and not opened.of("imgs"), "no table or thumbnail sent again"
