"""Parity: the harness's numbers equal the standalone `lm_eval` CLI's on the same configs and items.

The harness scores log-likelihoods with its shared-context scorer by default, which agrees with stock
`HFLM` only to float rounding (tests/test_prior_scorer.py checks that to 1e-4 nats). This test is about
everything around the model call (task configs, item selection, metric extraction, stored items), so
it runs the harness with stock `HFLM` and demands equality to the last digit.

Slow (a real model, both sides evaluated): run with `pytest -m slow tests/test_prior_parity.py`.
"""

from __future__ import annotations

import json

import pytest
import yaml

BENCHES = ["hellaswag", "truthfulqa_mc1", "mmlu", "winogrande", "arc_easy", "ifeval", "humaneval", "gsm8k"]
LIMIT = 6


@pytest.mark.slow
def test_harness_equals_lm_eval_cli(tmp_path, data_dir, monkeypatch):
    import torch

    from harness.models import SMOKE_MODEL, load_model, materialise
    from harness.prior import evaluate_prior
    from harness.prior.parity import compare, run_cli
    from harness.store import Store

    from lm_eval.models.huggingface import HFLM

    from harness.prior import scorer

    torch.set_num_threads(1)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setattr(scorer, "make_lm", lambda m, t, batch_size=8, **kw: HFLM(pretrained=m, tokenizer=t,
                                                                                 batch_size=batch_size, **kw))
    monkeypatch.setattr(scorer, "SCORER_ID", "stock-hflm")
    folder = materialise(SMOKE_MODEL)
    model, tok = load_model(str(folder))
    suite = tmp_path / "suite.yaml"
    suite.write_text(yaml.safe_dump({"seed": 1234, "benchmarks": {
        "hellaswag": {}, "truthfulqa_mc1": {}, "mmlu": {}, "winogrande": {}, "arc_easy": {},
        "ifeval": {"max_gen_toks": 48}, "humaneval": {"max_gen_toks": 64},
        "gsm8k": {"metric": "exact_match,flexible-extract", "max_gen_toks": 48}}}))
    store = Store(tmp_path / "s.db")
    res = evaluate_prior(model, tok, model_label="base", store=store, suite_path=suite, benchmarks=BENCHES,
                         limit=LIMIT, data_dir=data_dir, batch_size=4)
    cli, _ = run_cli(folder, res, tmp_path / "cli", limit=LIMIT, batch_size=4, data_dir=data_dir, timeout=1500)
    rows = compare(res, cli)
    print(json.dumps(rows, indent=1))
    for row in rows:
        assert row["cli"] is not None, row
        assert row["harness"] == row["cli"], row  # exact, to the last digit
        if row["stderr_compared"]:
            assert row["harness_stderr"] == row["cli_stderr"], row
    # per item: the CLI's log-likelihoods / responses and scores equal those stored by the harness
    for name in BENCHES:
        if name == "mmlu":  # one samples file per subject; covered by the headline value above
            continue
        metric, filt = compare({name: res[name]}, cli)[0]["metric"].split(",", 1)
        files = list((tmp_path / "cli" / "out" / name).rglob("samples_*.jsonl"))
        assert len(files) == 1, files
        theirs = {}
        for line in files[0].read_text().splitlines():
            smp = json.loads(line)
            if smp["filter"] == filt:
                theirs[smp["doc_id"]] = smp
        ours = store.examples(res[name]["eval_key"])
        assert len(ours) == len(theirs) == LIMIT
        for i, e in enumerate(ours):
            t = theirs[i]
            resp = t["filtered_resps"]
            if isinstance(resp[0], list):
                assert e["diagnostics"]["loglikelihoods"] == [float(r[0]) for r in resp], (name, i)
            else:
                assert e["output"] == resp[0], (name, i)
            value = t[metric]
            expected = sum(map(float, value)) / len(value) if isinstance(value, list) else float(value)
            assert e["score"] == expected, (name, i)
