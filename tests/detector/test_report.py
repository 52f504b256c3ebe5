"""The drift report as a person sees it: rendered by headless Chromium (``housing drift``, ``GET /report``).

Chromium (Debian's ``chromium``, installed by ``./dev setup``) loads the page, with every request it makes
outside the machine sent to a recording proxy, and the tests read what it rendered: the summary line, one plot
per feature with the feature's name in it, the drifted feature flagged, the score history and the accuracy.
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from detector.keys import WindowKey
from detector.monitor import Monitor, Settings
from detector.report import HistoryPoint, Section, estimated_mae, interval_coverage, render
from detector.retrain import RetrainTrigger
from detector.stats import DriftTester, Reference
from model.artifact import load_artifact, read_metadata
from model.dataset import load_dataset
from model.schema import ALL_FEATURES
from tests.conftest import require
from tests.detector.conftest import DetectorProcess, batch_element, drift, held_out_rows

# Debian's name, then what GitHub's Ubuntu runners have (the same browser: the flags below work for each).
BROWSERS = ("chromium", "chromium-browser", "google-chrome")
# What Chromium itself asks for in the background whatever the page (clock, component updates, sign-in: seen
# on clients2.google.com, update.googleapis.com, redirector.gvt1.com, accounts.google.com), not the page's
# requests. Web fonts, the usual fetch of a report page, come from Google too: they are not excused.
CHROMIUM_OWN_DOMAINS = (".google.com", ".googleapis.com", ".gvt1.com", ".gvt2.com")
EXTERNAL_REFERENCE = re.compile(
    r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//|url\(\s*["']?(?:https?:)?//""", re.I
)


@dataclass
class Page:
    """What the browser rendered, read from its DOM."""

    summary: list[str] = field(default_factory=list)
    figures: dict[str, dict[str, object]] = field(default_factory=dict)
    captions: dict[str, str] = field(default_factory=dict)
    plot_text: dict[str, str] = field(default_factory=dict)
    h1: str = ""


class _Reader(HTMLParser):
    """Collects the summary items, each feature figure (SVG count, SVG text, flag, caption), the captions."""

    def __init__(self) -> None:
        super().__init__()
        self.page = Page()
        self.stack: list[str] = []
        self.figure: dict[str, object] | None = None
        self.figure_class = ""
        self.text: list[str] = []
        self.where: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        self.stack.append(tag)
        if tag == "figure":
            self.figure_class = attributes.get("class") or ""
            self.figure = {
                "svgs": 0,
                "svg_text": "",
                "drifted": attributes.get("data-drifted"),
                "caption": "",
            }
            if "data-feature" in attributes:
                self.page.figures[str(attributes["data-feature"])] = self.figure
        elif tag == "svg" and self.figure is not None:
            self.figure["svgs"] = int(self.figure["svgs"]) + 1  # type: ignore[call-overload]
        if tag in ("li", "figcaption", "h1", "text"):
            self.where, self.text = tag, []

    def handle_endtag(self, tag: str) -> None:
        while self.stack and self.stack.pop() != tag:
            pass
        words = " ".join("".join(self.text).split())
        if tag == "li" and self.where == "li":
            self.page.summary.append(words)
        elif tag == "h1":
            self.page.h1 = words
        elif tag == "text" and self.figure is not None:
            self.figure["svg_text"] = f"{self.figure['svg_text']} {words}"
        elif tag == "figcaption" and self.figure is not None:
            self.figure["caption"] = words
            self.page.captions[self.figure_class.split()[0]] = words
        if tag == "figure" and self.figure is not None:
            self.page.plot_text[self.figure_class.split()[0]] = str(self.figure["svg_text"])
            self.figure = None
        if tag == self.where:
            self.where = None

    def handle_data(self, data: str) -> None:
        if self.where is not None:
            self.text.append(data)


def read_page(dom: str) -> Page:
    reader = _Reader()
    reader.feed(dom)
    return reader.page


class RecordingProxy:
    """An HTTP proxy that answers nothing and records the first line of every request sent to it."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.requests: list[str] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self.server.accept()
            except OSError:
                return
            with connection:
                connection.settimeout(2)
                try:
                    self.requests.append(connection.recv(512).split(b"\r\n")[0].decode(errors="replace"))
                except OSError:
                    self.requests.append("(nothing read)")

    def page_requests(self) -> list[str]:
        """The requests that were not Chromium's own background traffic."""
        return [line for line in self.requests if not _chromiums_own(line)]

    def close(self) -> None:
        self.server.close()


def _chromiums_own(line: str) -> bool:
    """Whether a proxied request line (``CONNECT host:443``, ``GET http://host/...``) is Chromium's own."""
    target = line.split(" ")[1] if " " in line else line
    host = target.split("://")[-1].split("/")[0].split(":")[0]
    return not host.startswith("fonts.") and host.endswith(CHROMIUM_OWN_DOMAINS)


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[tuple[str, RecordingProxy]]:
    """The Chromium executable and a recording proxy that every non-loopback request goes to."""
    path = next(filter(None, map(shutil.which, BROWSERS)), None)
    require(path is not None, f"none of {', '.join(BROWSERS)} is installed (./dev setup installs chromium)")
    assert path is not None
    proxy = RecordingProxy()
    yield path, proxy
    proxy.close()


def chromium(browser: tuple[str, RecordingProxy], url: str, profile: Path, *extra: str) -> str:
    """Load ``url`` in headless Chromium (remote requests go to the recording proxy); its standard output."""
    path, proxy = browser
    command = [path, "--headless", "--disable-gpu", f"--user-data-dir={profile}",
               # Root in a container has no user namespace for the sandbox; the page is our own.
               "--no-sandbox", f"--proxy-server=http://127.0.0.1:{proxy.port}",
               "--disable-background-networking", "--disable-component-update", "--no-first-run",
               "--virtual-time-budget=3000", *extra, url]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def assert_self_contained(html: str) -> None:
    assert not EXTERNAL_REFERENCE.findall(html), "the report must reference nothing outside itself"


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A reference sample, and the other rows as current data with predictions 1 off the truth, plain and
    with ``rm`` shifted by one standard deviation."""
    directory = tmp_path_factory.mktemp("report-csv")
    data = load_dataset()
    reference = data.sample(300, random_state=0)
    current = data.drop(reference.index)
    current = current.assign(prediction=current["medv"] + np.where(np.arange(len(current)) % 2, 1.0, -1.0))
    shifted = current.assign(rm=current["rm"] + data["rm"].std())
    paths = {name: directory / f"{name}.csv" for name in ("reference", "current", "shifted")}
    for name, frame in (("reference", reference), ("current", current), ("shifted", shifted)):
        frame.to_csv(paths[name], index=False)
    return paths


def test_cli_report_shows_the_drifted_feature_in_chromium(
    files: dict[str, Path], tmp_path: Path, browser: tuple[str, RecordingProxy]
) -> None:
    page_path = tmp_path / "report.html"
    arguments = ["--reference-data", str(files["reference"]), "--current-data", str(files["shifted"])]
    options = ["--report", str(page_path), "--window-size", "50", "--model-version", "v7"]
    assert drift(*arguments, *options) == 1
    html = page_path.read_text()
    assert_self_contained(html)

    page = read_page(chromium(browser, page_path.as_uri(), tmp_path / "profile", "--dump-dom"))
    assert page.h1 == "Drift report: DRIFT"
    assert page.summary == [
        "shifted.csv against reference.csv: drift: yes · drifted features: rm · window size: 206 rows · "
        "model version: v7"
    ]
    assert list(page.figures) == list(ALL_FEATURES)  # b too: both files have it
    for name, figure in page.figures.items():
        assert figure["svgs"] == 1, name
        assert f"{name}:" in str(figure["svg_text"]), f"{name}'s plot is not titled with its name"
        assert "density" in str(figure["svg_text"]) and "reference" in str(figure["svg_text"])
    drifted = {name for name, figure in page.figures.items() if figure["drifted"] == "yes"}
    assert drifted == {"rm"}
    assert "DRIFTED" in str(page.figures["rm"]["svg_text"]) and "drifted" in str(
        page.figures["rm"]["caption"]
    )
    assert page.captions["history"] == "4 of the last 4 windows drifted."
    assert page.captions["accuracy"] == "now: realised MAE 1.00 (206 labels); no estimate."
    assert browser[1].page_requests() == []

    # And as a picture: the page is drawn, not blank (a quarter of its pixels at least are not white).
    shot = tmp_path / "report.png"
    chromium(
        browser, page_path.as_uri(), tmp_path / "profile", "--window-size=1280,2000", f"--screenshot={shot}"
    )
    import matplotlib.image

    pixels = matplotlib.image.imread(shot)[:, :, :3]
    assert (pixels.min(axis=2) < 0.9).mean() > 0.05


def test_the_request_check_sees_a_page_that_fetches(
    tmp_path: Path, browser: tuple[str, RecordingProxy]
) -> None:
    """The proxy and the scan catch a page that loads something from elsewhere (so their silence means it)."""
    page = tmp_path / "fetching.html"
    page.write_text("<!doctype html><p>x</p><img src='http://images.example.invalid/plot.png'>")
    chromium(browser, page.as_uri(), tmp_path / "profile", "--dump-dom")
    assert any("images.example.invalid" in line for line in browser[1].page_requests())
    with pytest.raises(AssertionError):
        assert_self_contained(page.read_text())


def test_cli_report_without_drift(files: dict[str, Path], tmp_path: Path) -> None:
    page_path = tmp_path / "report.html"
    arguments = ["--reference-data", str(files["reference"]), "--current-data", str(files["current"])]
    assert drift(*arguments, "--report", str(page_path)) == 0
    page = read_page(page_path.read_text())
    assert page.h1 == "Drift report: no drift"
    assert page.summary[0].endswith(
        "drift: no · drifted features: none · window size: 206 rows · model version: unknown"
    )
    assert {figure["drifted"] for figure in page.figures.values()} == {"no"}
    assert page.captions["history"] == "0 of the last 1 windows drifted."
    assert drift(*arguments, "--report", str(page_path), "--window-size", "1") == 2


def test_estimate_is_drawn_when_the_status_has_one_else_named_missing(artifact_dir: Path) -> None:
    assert estimated_mae({"live": {"mae": 2.0}}) is None
    assert estimated_mae({"live": {"mae": None}, "estimate": None}) is None
    assert estimated_mae({"estimate": {"mae": 2.5, "rmse": 3.0}}) == 2.5
    reference = Reference.from_metadata(read_metadata(artifact_dir))
    history = [
        HistoryPoint(score=0.1, threshold=0.3, drifted=False, estimated_mae=2.5 + step) for step in range(3)
    ]
    section = Section(
        "default/v1",
        "v1",
        200,
        reference.features,
        reference.rows,
        history=history,
        waiting=37,
        estimated_mae=4.4,
    )
    page = read_page(render([section]))
    assert page.summary == ["default/v1: drift: not tested yet (37 of 200 rows) · window size: 200 rows · "
                            "model version: v1"]  # fmt: skip
    assert page.captions["accuracy"] == "now: no labels yet; estimated MAE 4.40."
    assert page.figures == {}  # no window's rows to draw yet: said, not drawn


def test_interval_coverage_is_shown_beside_the_mae(artifact_dir: Path) -> None:
    status = {
        "live": {"mae": 2.0, "labels": 40},
        "coverage": {"0.9": {"labels": 40, "coverage": 0.875, "width": 9.0}},
    }
    assert interval_coverage(status) == (0.875, 40) and interval_coverage({"live": {}}) == (None, 0)
    reference = Reference.from_metadata(read_metadata(artifact_dir))
    history = [
        HistoryPoint(
            score=0.1, threshold=0.3, drifted=False, realised_mae=2.0, labels=40, coverage=0.9 - step / 10
        )
        for step in range(3)
    ]
    now = {"realised_mae": 2.0, "labels": 40, "coverage": 0.875, "coverage_labels": 40}
    section = Section("default/v1", "v1", 200, reference.features, reference.rows, history=history, **now)
    page = read_page(render([section]))
    assert page.captions["accuracy"] == (
        "now: realised MAE 2.00 (40 labels); 90% intervals cover 87.5% of labelled prices (40 labels); "
        "no estimate."
    )
    assert "90% interval coverage" in render([section])  # the coverage line's legend, as text in the SVG


def test_history_is_kept_per_key_and_saved_with_the_state(artifact_dir: Path) -> None:
    from detector.events import InferenceEvent

    tester = DriftTester(Reference.from_metadata(read_metadata(artifact_dir)))
    monitor = Monitor(tester, Settings(window_size=20), RetrainTrigger("none", None))
    rows = held_out_rows(artifact_dir)[:60]
    for index, row in enumerate(rows):
        monitor.ingest(InferenceEvent("request", f"r{index}", "default", "t", None, rows=np.atleast_2d(row)))
        monitor.ingest(
            InferenceEvent("response", f"r{index}", "default", "t", "v1", predictions=np.array([20.0]))
        )
    monitor.test_due()
    key = WindowKey("default", "v1")
    assert len(monitor.history[key]) == 3 and monitor.tested_rows[key].shape == (
        20,
        len(tester.reference.features),
    )
    assert {"score", "threshold", "drifted", "live", "time"} <= set(monitor.history[key][-1])
    restored = Monitor(tester, Settings(window_size=20), RetrainTrigger("none", None), monitor.snapshot())
    assert list(restored.history[key]) == list(monitor.history[key])


@pytest.mark.slow
def test_detector_serves_the_report(start_detector, artifact_dir: Path, tmp_path: Path, browser) -> None:
    """A real detector: two in-distribution windows, two with ``lstat`` shifted, labels 1 off: the page."""
    detector: DetectorProcess = start_detector("--window_size", "100")
    version = str(read_metadata(artifact_dir)["version"])
    names = detector.features
    held_out = held_out_rows(artifact_dir)
    rows = held_out[np.random.default_rng(3).integers(0, len(held_out), 400)]
    rows[200:, names.index("lstat")] += rows[:, names.index("lstat")].std() * 1.5
    predictions = load_artifact(artifact_dir).pipeline.predict(rows)
    elements = []
    for index, (row, prediction) in enumerate(zip(rows, predictions, strict=True)):
        elements.append(
            batch_element(
                "request", f"q{index}", {"instances": [dict(zip(names, row.tolist(), strict=True))]}
            )
        )
        elements.append(batch_element("response", f"q{index}", {"predictions": [float(prediction)]}))
    assert detector.send_batch(elements).status_code == 202
    detector.settle()
    labels = [{"id": f"q{index}", "value": float(predictions[index] + 1.0)} for index in range(300, 400)]
    assert detector.client.post(detector.url + "/feedback", json={"labels": labels}).json()["accepted"] == 100

    answer = detector.client.get(detector.url + "/report")
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/html")
    assert_self_contained(answer.text)
    # The person's view: Chromium fetches the page from the detector itself (loopback is not proxied).
    page = read_page(chromium(browser, detector.url + "/report", tmp_path / "profile", "--dump-dom"))
    # A shift this large may also break the features' joint structure: the summary says so when it does.
    assert len(page.summary) == 1 and re.fullmatch(
        rf"endpoint default, model version {re.escape(version)}: drift: yes · drifted features: lstat"
        rf"( \(and the features' joint structure\))? · window size: 100 rows · "
        rf"model version: {re.escape(version)}",
        page.summary[0],
    ), page.summary
    assert list(page.figures) == names
    assert all(
        figure["svgs"] == 1 and f"{name}:" in str(figure["svg_text"]) for name, figure in page.figures.items()
    )
    assert {name for name, figure in page.figures.items() if figure["drifted"] == "yes"} == {"lstat"}
    assert page.captions["history"] == "2 of the last 4 windows drifted."
    status = detector.status()["keys"][f"default/{version}"]
    estimate = estimated_mae(status)
    # The artifact's loss estimator (dle.json) gives an estimate per window, drawn beside the labels' MAE.
    assert (estimate is not None) == (artifact_dir / "dle.json").exists()
    expected = "no estimate" if estimate is None else f"estimated MAE {estimate:.2f}"
    assert (estimate is not None) == ("estimated MAE (no labels)" in page.plot_text["accuracy"])
    assert "realised MAE (labels)" in page.plot_text["accuracy"]
    # The labels came after the last window: the caption (and the plot's last point) is now's accuracy.
    assert page.captions["accuracy"] == f"now: realised MAE 1.00 (100 labels); {expected}."
    assert browser[1].page_requests() == []
