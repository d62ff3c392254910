"""`wrpo build sft` and `wrpo build pairs`: y_ws over all sources, the stable split, y_wt and y_l."""

from conftest import read, write_jsonl
from wrpo.data.construct import build_pairs, build_sft, in_sft_split
from wrpo.data.prompts import read_prompts
from wrpo.data.records import iter_quadruples


def scored_rows(model, scores_per_prompt):
    return [{"prompt_id": pid, "prompt": f"reverse {pid}", "model": model,
             "responses": [f"{model}-{pid}-{i}" for i in range(len(s))], "scores": s}
            for pid, s in scores_per_prompt.items()]


def test_build_sft_picks_the_best_response_over_all_sources_and_splits_stably(tmp_path):
    ids = [f"p{i}" for i in range(30)]
    a = write_jsonl(tmp_path / "a.jsonl",
                    scored_rows("a", {pid: [0.1, 0.9 if i % 2 else 0.2] for i, pid in enumerate(ids)}))
    b = write_jsonl(tmp_path / "b.jsonl", scored_rows("b", {pid: [0.5, 0.4] for pid in ids}))
    summary = build_sft([a, b], tmp_path / "sft.jsonl", tmp_path / "pref.jsonl", sft_fraction=1 / 3, seed=7)
    sft_rows, pref_rows = read(tmp_path / "sft.jsonl"), read(tmp_path / "pref.jsonl")
    assert sorted(r["prompt_id"] for r in sft_rows + pref_rows) == sorted(ids)
    assert {r["prompt_id"] for r in sft_rows} == {pid for pid in ids if in_sft_split(pid, 1 / 3, 7)}
    for row in sft_rows:
        odd = int(row["prompt_id"][1:]) % 2
        assert row["response"] == (f"a-{row['prompt_id']}-1" if odd else f"b-{row['prompt_id']}-0")
    for row in pref_rows:
        scores = [s["score"] for s in row["source_responses"]]
        assert scores == sorted(scores, reverse=True)
    assert summary.wins == {"a": 15, "b": 15}
    # The split is a function of the id and seed alone: other data, same ids, same split.
    build_sft([b], tmp_path / "sft2.jsonl", tmp_path / "pref2.jsonl", sft_fraction=1 / 3, seed=7)
    assert {r["prompt_id"] for r in read(tmp_path / "sft2.jsonl")} == {r["prompt_id"] for r in sft_rows}


def test_preference_prompts_keep_the_prompt_rows_fields_for_the_target_scorer(tmp_path):
    rows = scored_rows("a", {f"p{i}": [0.5] for i in range(6)})
    scored = write_jsonl(tmp_path / "a.jsonl", [{**row, "meta": {"answer": row["prompt_id"]}} for row in rows])
    build_sft([scored], tmp_path / "sft.jsonl", tmp_path / "pref.jsonl", sft_fraction=0, seed=7)
    prompts = read_prompts(tmp_path / "pref.jsonl")
    assert len(prompts) == 6 and all(row.meta["answer"] == row.prompt_id for row in prompts)


def test_build_pairs_takes_best_and_worst_target_samples_and_drops_ties(tmp_path):
    pref = write_jsonl(tmp_path / "pref.jsonl", [
        {"prompt_id": pid, "prompt": f"reverse {pid}", "source_responses": [
            {"model": "a", "text": f"best-{pid}", "score": 0.9}, {"model": "b", "text": f"second-{pid}", "score": 0.5}]}
        for pid in ("p1", "p2", "p3")])
    target = write_jsonl(tmp_path / "t.jsonl", scored_rows("t", {"p1": [0.3, 0.8, 0.1, 0.8, 0.1],
                                                                "p2": [0.4, 0.4, 0.4]}))
    summary = build_pairs(pref, [target], tmp_path / "q.jsonl", top_k_sources=2)
    quadruples = [q for _, q in iter_quadruples(tmp_path / "q.jsonl")]
    assert len(quadruples) == 1
    q = quadruples[0]
    # Of samples that score the same, the first is y_wt or y_l.
    assert (q.chosen_source, q.chosen_target, q.rejected) == (["best-p1", "second-p1"], "t-p1-1", "t-p1-2")
    assert q.source_scores == [0.9, 0.5]
    assert summary.dropped == {"prompts whose target samples all score the same": 1,
                               "prompts with fewer than 2 target samples": 1}


def source_prompts(path, responses_per_prompt):
    """Preference prompts as `build sft` writes them: every source response of a prompt, best first."""
    return write_jsonl(path, [
        {"prompt_id": pid, "prompt": f"reverse {pid}", "source_responses": sorted(
            [{"model": model, "text": f"{model}-{pid}-{score}", "score": score} for model, score in responses],
            key=lambda response: -response["score"])}
        for pid, responses in responses_per_prompt.items()])


def test_same_source_pairs_take_one_sources_best_and_worst_within_the_reward_gap_window(tmp_path):
    pref = source_prompts(tmp_path / "pref.jsonl", {
        # a's gap 0.05 is in the window; b has the best response but a gap of 0.3: a's pair is kept.
        "p1": [("a", 0.80), ("a", 0.75), ("b", 0.90), ("b", 0.60)],
        # both in the window: the source whose best response is higher (b).
        "p2": [("a", 0.50), ("a", 0.45), ("b", 0.70), ("b", 0.62)],
        # gaps 0.005 and 0.5, and c has one response: no pair.
        "p3": [("a", 0.5), ("a", 0.495), ("b", 0.9), ("b", 0.4), ("c", 0.99)],
    })
    target = write_jsonl(tmp_path / "t.jsonl", scored_rows("t", {"p1": [0.2, 0.7], "p2": [0.1, 0.3]}))
    summary = build_pairs(pref, [target], tmp_path / "q.jsonl", same_source=True)
    rows = {row["prompt_id"]: row for row in read(tmp_path / "q.jsonl")}
    assert set(rows) == {"p1", "p2"}
    assert (rows["p1"]["chosen_source"], rows["p1"]["rejected"]) == (["a-p1-0.8"], "a-p1-0.75")
    assert (rows["p2"]["chosen_source"], rows["p2"]["rejected"]) == (["b-p2-0.7"], "b-p2-0.62")
    assert rows["p1"]["chosen_target"] == "t-p1-1"  # y_wt stays target-sft's best sample
    assert rows["p2"]["meta"]["rejected_model"] == "b" and rows["p2"]["meta"]["pairing"] == "same-source"
    assert summary.dropped == {"prompts without a source whose best-worst reward gap lies in [0.01, 0.1]": 1}
    # Without target samples y_wt is y_ws, and a wider window keeps p3 (b's gap 0.5).
    build_pairs(pref, [], tmp_path / "q2.jsonl", same_source=True, min_reward_gap=0.01, max_reward_gap=0.6)
    rows = {row["prompt_id"]: row for row in read(tmp_path / "q2.jsonl")}
    assert (rows["p3"]["chosen_source"], rows["p3"]["rejected"]) == (["b-p3-0.9"], "b-p3-0.4")
    assert all(row["chosen_target"] == row["chosen_source"][0] for row in rows.values())
    assert [q.prompt_id for _, q in iter_quadruples(tmp_path / "q2.jsonl")] == ["p1", "p2", "p3"]


def test_build_pairs_command_takes_same_source_flags_and_needs_target_scores_otherwise(tmp_path):
    from typer.testing import CliRunner

    from wrpo.cli import app

    pref = source_prompts(tmp_path / "pref.jsonl", {"p1": [("a", 0.8), ("a", 0.75)]})
    output = tmp_path / "q.jsonl"
    result = CliRunner().invoke(app, ["build", "pairs", "--preference-prompts", str(pref), "--output", str(output)])
    assert result.exit_code == 2
    assert result.stderr == "error: --target-scores is required (without it, only --same-source pairs can be built)\n"
    result = CliRunner().invoke(app, ["build", "pairs", "--preference-prompts", str(pref), "--output", str(output),
                                      "--same-source", "--min-reward-gap", "0.2", "--max-reward-gap", "0.1"])
    assert result.exit_code == 2 and "min_reward_gap (0.2) is above max_reward_gap (0.1)" in result.stderr
    result = CliRunner().invoke(app, ["build", "pairs", "--preference-prompts", str(pref), "--output", str(output),
                                      "--same-source"])
    assert result.exit_code == 0, result.output
    assert [(row["chosen_source"], row["rejected"]) for row in read(output)] == [(["a-p1-0.8"], "a-p1-0.75")]
