"""Reading the metrics log while it is being written, as the progress bar and dispatcher do."""
import json

from trainer.metrics_log import read_metrics, read_records, start_steps


def test_tailing_reads_complete_lines_only_and_skips_garbled_ones(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text(json.dumps({"event": "start", "step": 0}) + "\n" + '{"step": 10, "lo' + "\n" + '{"step": 20, "loss"')
    records, offset = read_records(path)
    assert records == [{"event": "start", "step": 0}]  # the cut line is skipped, the unfinished one waits
    with path.open("a") as f:
        f.write(': 0.5}\n')
    more, offset2 = read_records(path, offset)
    assert more == [{"step": 20, "loss": 0.5}] and offset2 == path.stat().st_size
    assert read_records(path, offset2) == ([], offset2)
    assert read_records(tmp_path / "missing.jsonl", 7) == ([], 7)


def test_a_replaced_file_is_read_from_the_start(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text(json.dumps({"step": 1}) + "\n")
    assert read_records(path, 10_000) == ([{"step": 1}], path.stat().st_size)


def test_resumed_runs_keep_the_last_record_of_each_step(tmp_path):
    lines = [{"event": "start", "step": 0}, {"step": 10, "loss": 1.0}, {"step": 20, "loss": 0.9},
             {"event": "start", "step": 10}, {"step": 20, "loss": 0.8}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    assert read_metrics(tmp_path) == [{"step": 10, "loss": 1.0}, {"step": 20, "loss": 0.8}]
    assert start_steps(tmp_path) == [0, 10]
