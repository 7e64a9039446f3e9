"""How the flow reads a stage's output: tqdm bars become progress, every other line is logged."""

from gan.dvcrun import split_progress


def test_a_log_line_written_while_a_bar_is_drawn_is_kept():
    bar = "train:   7%|▋         | 7/100 [00:41<04:09, step 230/3298, loss_d 0.512, FD 1.5e+03 (best 1.5e+03)]"
    log = "2026-12-02 15:13:38,405 INFO gan.train: timed over the first 20 steps: 0.300 s/step"
    assert split_progress(bar + log) == ((7, 100), log)  # the log line shares the bar's line: both are kept
    assert split_progress(bar) == ((7, 100), "")
    classifier = "classifier:  10%|█         | 81/800 [00:24<04:59,  2.40step/s, loss=0.498]"
    assert split_progress(classifier) == ((81, 800), "")
    assert split_progress("stage 'train' done in 3.0 s") == (None, "stage 'train' done in 3.0 s")
