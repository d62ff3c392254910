"""The build steps return their summaries, and each table says what it counts."""

from rich.console import Console
from typer.testing import CliRunner

from conftest import write_jsonl
from wrpo.cli import app


def rendered(summary) -> str:
    console = Console(record=True, width=200)
    console.print(summary)
    return console.export_text()


def test_build_pairs_shows_the_target_samples_and_where_y_ws_comes_from(tmp_path):
    from wrpo.data.construct import build_pairs

    sources = {"p1": "a", "p2": "b", "p3": "a"}
    pref = write_jsonl(tmp_path / "pref.jsonl", [
        {"prompt_id": pid, "prompt": f"reverse {pid}", "source_responses": [{"model": model, "text": "x", "score": 1}]}
        for pid, model in sources.items()])
    target = write_jsonl(tmp_path / "t.jsonl", [
        {"prompt_id": pid, "prompt": f"reverse {pid}", "model": "target-sft", "responses": ["u", "vv", "w"],
         "scores": [0.1, 0.9, 0.5]} for pid in sources])
    text = rendered(build_pairs(pref, [target], tmp_path / "q.jsonl"))
    assert "y_ws of the quadruples comes from: a 2, b 1" in text
    table_rows = [[cell.strip() for cell in line.split("│")[1:-1]]
                  for line in text.splitlines() if line.startswith("│")]
    assert table_rows == [["target-sft", "9", "0.1 / 0.5 / 0.9", "1"]]  # the target's samples, not the sources


def test_the_command_prints_the_summary_the_library_returns(tmp_path):
    rows = [{"prompt_id": f"p{i}", "prompt": "x", "model": model, "responses": ["r"], "scores": [score]}
            for i in range(6) for model, score in (("a", 0.9), ("b", 0.1))]
    scores = write_jsonl(tmp_path / "s.jsonl", rows)
    result = CliRunner().invoke(app, ["build", "sft", "--scores", str(scores),
                                      "--sft-output", str(tmp_path / "sft.jsonl"),
                                      "--preference-output", str(tmp_path / "pref.jsonl")])
    assert result.exit_code == 0, result.output
    assert "y_ws comes from: a 6" in result.stderr
