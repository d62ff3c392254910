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
    target = write_jsonl(tmp_path / "t.jsonl", scored_rows("t", {"p1": [0.3, 0.8, 0.1], "p2": [0.4, 0.4, 0.4]}))
    summary = build_pairs(pref, [target], tmp_path / "q.jsonl", top_k_sources=2)
    quadruples = [q for _, q in iter_quadruples(tmp_path / "q.jsonl")]
    assert len(quadruples) == 1
    q = quadruples[0]
    assert (q.chosen_source, q.chosen_target, q.rejected) == (["best-p1", "second-p1"], "t-p1-1", "t-p1-2")
    assert q.source_scores == [0.9, 0.5]
    assert summary.dropped == {"prompts whose target samples all score the same": 1,
                               "prompts with fewer than 2 target samples": 1}
