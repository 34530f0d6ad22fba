"""The one progress display: honest rate and ETA, phases, the current item, and plain timed lines
when stderr is not a terminal (a log file, nohup, a cluster job)."""
import io
import re
import time

from distar.core.progress import ProgressBar, progress_bar


def test_non_tty_lines_phases_rate_eta_and_item():
    stream = io.StringIO()  # isatty() is False: plain lines
    with progress_bar("tiny on parti", total=12, stream=stream, every=0.05) as bar:
        bar.phase("loading StableDiffusionXLPipeline")
        time.sleep(0.3)   # slow loading: excluded from the rate, but reported
        bar.phase("warm-up batch")
        time.sleep(0.1)
        bar.start()
        for b in range(3):
            time.sleep(0.1)
            bar.advance(4, item=f"batch {b + 1}/3")  # a batch lands at once
    lines = stream.getvalue().splitlines()
    assert any("loading StableDiffusionXLPipeline ..." in ln for ln in lines)
    assert any("warm-up batch ..." in ln for ln in lines)
    final = lines[-1]
    assert final.startswith("tiny on parti: 12/12 (100%)") and "batch 3/3" in final
    rate = float(re.search(r"([\d.]+) img/s", final).group(1))
    # 12 images in ~0.3 s of counting: ~40 img/s, never the thousands a burst-window gives
    assert 10 < rate < 80, final
    assert "ETA 0:00" in final


def test_heartbeat_while_nothing_advances():
    """A long batch or load still prints a line every `every` seconds."""
    stream = io.StringIO()
    bar = ProgressBar("slow", total=2, stream=stream, every=0.1)
    bar.phase("loading")
    time.sleep(0.45)
    bar.close()
    assert stream.getvalue().count("slow: 0/2") >= 3


def test_eta_from_the_measured_rate():
    bar = ProgressBar("x", total=100, stream=io.StringIO(), every=1e9)
    bar.start()
    time.sleep(0.2)
    bar.update(50)
    assert abs(bar.eta() - 0.2) < 0.15  # 50 left at ~250/s
    bar.close()


def test_tty_uses_one_rich_bar_and_closes():
    stream = io.StringIO()
    with progress_bar("t", total=3, stream=stream, tty=True) as bar:
        bar.advance(3, item="done")
    assert "3/3" in stream.getvalue()
