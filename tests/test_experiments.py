"""Tests for initwise.experiments: loaders, builders, training loop, compare/sweep reports,
claims plumbing and the evidence CLI subcommands. Small models and few steps only."""
from __future__ import annotations

import csv
import json
import random
import socket

# The experiments need the optional extras; the test extra installs them, so a missing one is
# an error here, never a silently skipped module.
import matplotlib  # noqa: F401
import mnist1d  # noqa: F401
import numpy as np
import pytest
import sklearn  # noqa: F401
import torch
from torch import nn

from initwise.experiments import (
    DATASET_NAMES,
    TrainConfig,
    activation_stats,
    apply_experiment_scheme,
    check_config,
    build_model,
    cnn,
    compare,
    evaluate,
    load_dataset,
    mlp,
    model_inputs,
    row_spread,
    sweep,
    train,
)
from initwise.experiments import datasets as ds
from initwise.experiments.claims import CLAIMS, claim_orthogonal_rnn, claim_zero_symmetry
from initwise.experiments.compare import TrainingComparison
from initwise.experiments.training import seeded

EXPECTED = {  # name: (n_train, n_test, n_features, n_classes)
    "digits": (1347, 450, 64, 10),
    "breast_cancer": (426, 143, 30, 2),
    "wine": (133, 45, 13, 3),
    "mnist1d": (4000, 1000, 40, 10),
}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models: extra threads only fight the other processes for the 2 cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def offline_datasets():
    """Load every data set from scratch with all network connections failing, and with the
    global Python / NumPy random states checked for side effects."""
    import mnist1d.data  # noqa: F401  (importing scikit-learn itself draws from `random`;
    import sklearn.model_selection  # noqa: F401  only the loading is under test)

    ds._raw.cache_clear()
    mp = pytest.MonkeyPatch()

    def refuse(*args, **kwargs):
        raise OSError("network access attempted during a test")

    mp.setattr(socket.socket, "connect", refuse)
    mp.setattr(socket, "create_connection", refuse)
    random.seed(123)
    np.random.seed(123)
    py_before, np_before = random.random(), np.random.rand()
    random.seed(123)
    np.random.seed(123)
    try:
        loaded = {name: load_dataset(name) for name in DATASET_NAMES}
        py_after, np_after = random.random(), np.random.rand()
    finally:
        mp.undo()
    return loaded, (py_before, np_before), (py_after, np_after)


# ---------------------------------------------------------------------------- loaders
@pytest.mark.parametrize("name", DATASET_NAMES)
def test_loader_shapes_and_labels(offline_datasets, name):
    data = offline_datasets[0][name]
    n_tr, n_te, n_feat, n_cls = EXPECTED[name]
    assert data.x_train.shape == (n_tr, n_feat) and data.x_test.shape == (n_te, n_feat)
    assert data.y_train.shape == (n_tr,) and data.y_test.shape == (n_te,)
    assert data.x_train.dtype == torch.float32 and data.y_train.dtype == torch.int64
    assert data.n_classes == n_cls and data.n_features == n_feat
    assert set(data.y_train.tolist()) == set(range(n_cls))
    assert set(data.y_test.tolist()) <= set(range(n_cls))


@pytest.mark.parametrize("name", DATASET_NAMES)
def test_loader_standardizes_with_training_statistics(offline_datasets, name):
    data = offline_datasets[0][name]
    mean = data.x_train.double().mean(0)
    std = data.x_train.double().std(0, unbiased=False)
    constant = data.std == 1.0
    assert mean.abs().max() < 1e-5
    # non-constant features: unit std on the training split; constant ones are exactly 0
    assert (std[~constant] - 1).abs().max() < 1e-4
    if constant.any():
        assert float(data.x_train[:, constant].abs().max()) == 0.0
    # the test split is standardized with the *training* statistics
    assert float(data.x_test.double().mean(0).abs().max()) > 1e-4
    assert abs(float(data.x_test.mean())) < 0.2


def test_digits_test_split_uses_training_statistics(offline_datasets):
    data = offline_datasets[0]["digits"]
    raw = data.x_test.double() * data.std.double() + data.mean.double()
    # digits pixels are integers 0..16: undoing the standardization recovers them exactly
    assert (raw - raw.round()).abs().max() < 1e-3
    assert raw.min() > -1e-3 and raw.max() < 16 + 1e-3


def test_digits_split_is_fixed_and_stratified(offline_datasets):
    data = offline_datasets[0]["digits"]
    again = load_dataset("digits")
    assert torch.equal(data.x_train, again.x_train) and torch.equal(data.y_test, again.y_test)
    test_counts = torch.bincount(data.y_test, minlength=10).double()
    all_counts = test_counts + torch.bincount(data.y_train, minlength=10).double()
    assert (test_counts - 0.25 * all_counts).abs().max() <= 1.0  # stratified 25% test split


def test_loader_returns_independent_tensors():
    a = load_dataset("wine")
    a.x_train.zero_()
    a.y_train.zero_()
    b = load_dataset("wine")
    assert b.x_train.abs().sum() > 0 and b.y_train.max() == 2


def test_mnist1d_generation_leaves_global_random_state_alone(offline_datasets):
    _, before, after = offline_datasets
    assert before == after


def test_loader_rejects_unknown_names():
    with pytest.raises(ValueError, match="unknown dataset 'cifar'"):
        load_dataset("cifar")
    with pytest.raises(TypeError):
        load_dataset(3)


def test_image_and_sequence_layouts(offline_datasets):
    digits = offline_datasets[0]["digits"]
    x = digits.x_train[:5]
    assert digits.as_images(x).shape == (5, 1, 8, 8)
    assert digits.as_sequence(x, "pixel").shape == (5, 64, 1)
    rows = digits.as_sequence(x, "row")
    assert rows.shape == (5, 8, 8) and torch.equal(rows[:, 2], x[:, 16:24])
    m1d = offline_datasets[0]["mnist1d"]
    assert m1d.as_images(m1d.x_test[:3]).shape == (3, 1, 40)
    with pytest.raises(ValueError, match="row"):
        m1d.as_sequence(m1d.x_test[:3], "row")
    with pytest.raises(ValueError, match="tabular"):
        offline_datasets[0]["wine"].as_images(offline_datasets[0]["wine"].x_test)


# ---------------------------------------------------------------------------- builders
def test_mlp_depth_counts_weight_layers():
    model = mlp(64, 10, depth=30, width=32, activation="tanh")
    linears = [m for m in model if isinstance(m, nn.Linear)]
    assert len(linears) == 30
    assert sum(isinstance(m, nn.Tanh) for m in model) == 29
    assert linears[0].in_features == 64 and linears[-1].out_features == 10
    assert model(torch.zeros(4, 64)).shape == (4, 10)
    assert len(mlp(5, 3, depth=1)) == 1


def test_cnn_is_plain_and_keeps_spatial_size():
    model = cnn((1, 8, 8), 10, depth=4, channels=6, activation="relu")
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 3
    assert not any(isinstance(m, (nn.BatchNorm2d, nn.LayerNorm, nn.GroupNorm))
                   for m in model.modules())
    assert model(torch.zeros(2, 1, 8, 8)).shape == (2, 10)
    model1d = cnn((1, 40), 10, depth=3, channels=4)
    assert isinstance(model1d[0], nn.Conv1d) and model1d(torch.zeros(2, 1, 40)).shape == (2, 10)


@pytest.mark.parametrize("arch", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("mode,steps,per_step", [("pixel", 64, 1), ("row", 8, 8)])
def test_sequence_models_read_digits(offline_datasets, arch, mode, steps, per_step):
    digits = offline_datasets[0]["digits"]
    model = build_model(arch, digits, depth=2, width=12, activation="tanh", seq_mode=mode)
    x = model_inputs(arch, digits, digits.x_test[:3], mode)
    assert x.shape == (3, steps, per_step)
    assert model(x).shape == (3, 10)
    assert model.rnn.num_layers == 1 and model.rnn.hidden_size == 12


def test_builders_reject_bad_arguments(offline_datasets):
    with pytest.raises(ValueError, match="depth"):
        mlp(4, 2, depth=0)
    with pytest.raises(ValueError, match="unknown activation 'swishy'"):
        mlp(4, 2, depth=3, activation="swishy")
    with pytest.raises(ValueError, match="tabular"):
        build_model("cnn", offline_datasets[0]["wine"], depth=3)
    with pytest.raises(ValueError, match="depth >= 2"):
        cnn((1, 8, 8), 10, depth=1)
    with pytest.raises(ValueError, match="unknown arch"):
        build_model("transformer", offline_datasets[0]["digits"])


def test_seeded_build_is_reproducible_and_restores_global_state():
    torch.manual_seed(7)
    expected_next = torch.rand(3)
    torch.manual_seed(7)
    with seeded(1):
        a = mlp(8, 3, depth=3, width=5)
    after = torch.rand(3)
    with seeded(1):
        b = mlp(8, 3, depth=3, width=5)
    assert torch.equal(expected_next, after)
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)


# ---------------------------------------------------------------------------- measurements
def test_large_scheme_is_standard_normal_with_zero_bias():
    model = mlp(128, 10, depth=3, width=128)
    apply_experiment_scheme(model, "large", seed=0)
    w = model[2].weight.detach()  # 16,384 samples
    assert abs(float(w.mean())) < 0.03 and abs(float(w.std()) - 1) < 0.03
    assert all(float(m.bias.detach().abs().max()) == 0 for m in model if isinstance(m, nn.Linear))


def test_orthogonal_hh_changes_only_recurrent_weights():
    data = load_dataset("digits")
    for arch, blocks in (("rnn", 1), ("lstm", 4), ("gru", 3)):
        with seeded(3):
            built = build_model(arch, data, depth=3, width=32, activation="tanh")
        with seeded(3):
            model = build_model(arch, data, depth=3, width=32, activation="tanh")
        apply_experiment_scheme(model, "orthogonal_hh", seed=0)
        changed = []
        for (name, before), (_, after) in zip(built.named_parameters(), model.named_parameters()):
            if torch.equal(before, after):
                continue
            changed.append(name)
            for block in after.detach().reshape(blocks, 32, 32):  # every gate block orthogonal
                assert torch.allclose(block @ block.T, torch.eye(32), atol=1e-5), (arch, name)
        assert changed == ["rnn.weight_hh_l0", "rnn.weight_hh_l1"], arch
    again = build_model("rnn", data, depth=2, width=8)
    first = build_model("rnn", data, depth=2, width=8)
    apply_experiment_scheme(first, "orthogonal_hh", seed=5)
    apply_experiment_scheme(again, "orthogonal_hh", seed=5)
    assert torch.equal(first.rnn.weight_hh_l0, again.rnn.weight_hh_l0)
    plain = mlp(4, 2, depth=2, width=3)
    state = {k: v.clone() for k, v in plain.state_dict().items()}
    with pytest.raises(ValueError, match="orthogonal_hh.*recurrent"):
        apply_experiment_scheme(plain, "orthogonal_hh", seed=0)
    assert all(torch.equal(state[k], v) for k, v in plain.state_dict().items())


def test_row_spread_and_activation_stats():
    model = mlp(16, 3, depth=3, width=64, activation="tanh")
    for layer in model:
        if isinstance(layer, nn.Linear):
            nn.init.zeros_(layer.weight)
    assert row_spread(model) == 0.0
    with torch.no_grad():
        model[0].weight[0, 5] = 0.25
    assert row_spread(model) == pytest.approx(0.25)
    apply_experiment_scheme(model, "large", seed=0)
    stats = activation_stats(model, torch.randn(256, 16) * 3)
    assert [s["type"] for s in stats] == ["Tanh", "Tanh"]
    assert stats[1]["saturated"] > 0.5 and stats[0]["dead"] is None
    relu = nn.Sequential(nn.Linear(4, 6), nn.ReLU())
    with torch.no_grad():
        relu[0].weight.zero_()
        relu[0].bias.copy_(torch.tensor([-1.0, -1, -1, 1, 1, 1]))
    rec = activation_stats(relu, torch.randn(50, 4))[0]
    assert rec["dead"] == pytest.approx(0.5) and rec["mean"] == pytest.approx(0.5)
    assert rec["unit_std"] == 0.0  # every unit is constant over the batch


def test_activation_stats_match_diagnose_definitions():
    """dead = exactly 0 for the whole batch (ReLU family only), saturated = |tanh| > 0.99 or a
    hardtanh at its bounds, unit_std = std across the batch per unit, averaged: as diagnose."""
    from initwise import diagnose

    torch.manual_seed(0)
    x = torch.randn(64, 8)
    model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 32), nn.Tanh(),
                          nn.Linear(32, 32), nn.LeakyReLU(0.1), nn.Linear(32, 32),
                          nn.Hardtanh(-0.5, 0.5), nn.Linear(32, 2))
    with torch.no_grad():
        model[0].bias[:10] = -100.0  # 10 of 32 ReLU units dead
        model[2].weight.mul_(20)     # tanh saturates
        model[4].bias[:5] = -100.0   # leaky units negative everywhere: not dead
    stats = activation_stats(model, x)
    report = diagnose(model, x)
    assert [s["type"] for s in stats] == ["ReLU", "Tanh", "LeakyReLU", "Hardtanh"]
    assert stats[0]["dead"] == pytest.approx(10 / 32) and stats[2]["dead"] is None
    for s, layer in zip(stats, report.layers):
        assert s["unit_std"] == pytest.approx(layer.post_std, rel=1e-4)
        assert s["dead"] == (None if layer.dead is None else pytest.approx(layer.dead))
        assert s["saturated"] == (None if layer.saturated is None
                                  else pytest.approx(layer.saturated))
    assert stats[1]["saturated"] > 0.3 and stats[3]["saturated"] > 0.0
    h = model[:8](x)
    assert stats[3]["saturated"] == pytest.approx(float((h.abs() >= 0.5).float().mean()))


def test_evaluate_does_not_credit_nan_predictions():
    model = nn.Linear(3, 2)
    with torch.no_grad():
        model.weight.fill_(float("nan"))
    acc, loss = evaluate(model, torch.randn(10, 3), torch.zeros(10, dtype=torch.long))
    assert acc == 0.0 and loss != loss


def test_train_detects_divergence(offline_datasets):
    digits = offline_datasets[0]["digits"]
    with seeded(0):
        model = mlp(64, 10, depth=6, width=32, activation="relu")
    with torch.no_grad():
        model[0].weight.mul_(1e25)  # finite first loss, then SGD overshoots to inf / nan
    run = train(model, digits.x_train, digits.y_train, digits.x_test, digits.y_test,
                config=TrainConfig(steps=50, eval_every=10), seed=0, scheme="big")
    assert run.diverged and run.diverged_step is not None and 1 < run.diverged_step <= 50
    assert run.steps_done < run.diverged_step


def test_train_learns_and_config_validates(offline_datasets):
    wine = offline_datasets[0]["wine"]
    with seeded(0):
        model = mlp(13, 3, depth=2, width=16)
    run = train(model, wine.x_train, wine.y_train, wine.x_test, wine.y_test,
                config=TrainConfig(steps=60, eval_every=20), seed=0)
    assert run.steps == [0, 20, 40, 60] and len(run.test_acc) == 4
    assert run.final_test_acc > 0.8 and run.final_train_loss < run.train_loss[0]
    with pytest.raises(ValueError, match="steps"):
        TrainConfig(steps=0)
    with pytest.raises(ValueError, match="optimizer"):
        TrainConfig(optimizer="lbfgs")


# ---------------------------------------------------------------------------- compare / sweep
TINY = dict(depth=3, width=16, activation="relu", seeds=2,
            config=TrainConfig(steps=20, eval_every=10))
TINY_SCHEMES = ("torch", "zeros", "he", "auto", "large")


def _strip_times(d):
    if isinstance(d, dict):
        return {k: _strip_times(v) for k, v in d.items()
                if k not in ("wall_time", "wall_time_mean", "environment")}
    if isinstance(d, list):
        return [_strip_times(v) for v in d]
    return d


def test_compare_end_to_end_writes_report(tmp_path):
    comp = compare("digits", "mlp", schemes=TINY_SCHEMES, **TINY)
    assert len(comp.runs) == len(TINY_SCHEMES) * 2
    paths = comp.write(tmp_path / "report")
    data = json.loads((tmp_path / "report" / "results.json").read_text())  # strict JSON
    assert data["settings"]["schemes"] == list(TINY_SCHEMES)
    assert len(data["runs"]) == 10 and [r["scheme"] for r in data["summary"]] == list(TINY_SCHEMES)
    with open(paths["csv"], newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 10 and {r["seed"] for r in rows} == {"0", "1"}
    assert (tmp_path / "report" / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = (tmp_path / "report" / "summary.md").read_text()
    assert all(f"| {s} |" in summary for s in TINY_SCHEMES)
    # zero init never breaks the symmetry, other schemes have distinct rows
    rows_by = {r["scheme"]: r for r in comp.summary()}
    assert rows_by["zeros"]["row_spread_final"] == 0.0
    assert rows_by["he"]["row_spread_final"] > 0
    # a diverged run is counted (N(0,1) weights on a ReLU MLP overflow at lr 0.01? not
    # necessarily at depth 3) -- the count must match the runs' flags either way
    assert rows_by["large"]["diverged"] == sum(r.diverged for r in comp.runs_of("large"))
    again = TrainingComparison.from_dict(json.loads(json.dumps(comp.to_dict())))
    assert again.summary()[0]["test_acc_mean"] == comp.summary()[0]["test_acc_mean"]


def test_same_seed_same_numbers():
    a = compare("digits", "mlp", schemes=("torch", "auto"), **TINY)
    b = compare("digits", "mlp", schemes=("torch", "auto"), **TINY)
    assert _strip_times(a.to_dict()) == _strip_times(b.to_dict())
    seeds = {r.seed: r.test_acc for r in a.runs_of("torch")}
    assert seeds[0] != seeds[1]  # different seeds do differ


def test_schemes_share_the_data_order():
    # two identical schemes ("torch" built under the same seed) give identical curves
    a = compare("wine", "mlp", schemes=("torch",), **TINY)
    b = compare("wine", "mlp", schemes=("he", "torch"), **TINY)
    assert a.runs_of("torch")[0].train_loss == b.runs_of("torch")[0].train_loss


def test_compare_validates_before_training():
    with pytest.raises(ValueError, match="unknown scheme 'bogus'"):
        compare("digits", schemes=("he", "bogus"), **TINY)
    with pytest.raises(ValueError, match="twice"):
        compare("digits", schemes=("he", "he"), **TINY)


def test_compare_cnn_and_rnn_run():
    c = compare("digits", "cnn", depth=3, width=4, activation="relu", schemes=("torch", "auto"),
                seeds=1, config=TrainConfig(steps=5, eval_every=5))
    r = compare("digits", "gru", depth=2, width=8, schemes=("torch", "orthogonal"), seeds=1,
                seq_mode="row", config=TrainConfig(steps=5, eval_every=5))
    for comp, schemes in ((c, ["torch", "auto"]), (r, ["torch", "orthogonal"])):
        assert [run.scheme for run in comp.runs] == schemes
        for run in comp.runs:
            assert run.steps == [0, 5] and run.steps_done == 5 and not run.diverged
            assert all(np.isfinite(run.train_loss)) and all(np.isfinite(run.test_loss))
        # a different init gives a different loss before the first update
        assert comp.runs[0].train_loss[0] != comp.runs[1].train_loss[0]
    assert [rec["type"] for rec in c.runs[0].act_init] == ["ReLU", "ReLU"]
    # what "auto" does to the GRU of this comparison: each gate block of weight_hh orthogonal
    digits = load_dataset("digits")
    with seeded(0):
        model = build_model("gru", digits, depth=2, width=8, seq_mode="row")
    apply_experiment_scheme(model, "auto", 0,
                            example_input=model_inputs("gru", digits, digits.x_train[:8], "row"))
    for block in model.rnn.weight_hh_l0.detach().split(8):
        assert torch.allclose(block @ block.T, torch.eye(8), atol=1e-5)


@pytest.mark.parametrize("kwargs, message", [
    (dict(dataset="wine", arch="cnn"), "needs image or 1-D signal data.*digits or mnist1d"),
    (dict(depths=[0]), "depth must be a positive integer"),
    (dict(depths=[2, 0]), "depth must be a positive integer"),
    (dict(arch="cnn", depths=[1]), "needs depth >= 2"),
    (dict(arch="rnn", activation="gelu"), "nn.RNN supports activation 'tanh' or 'relu'"),
    (dict(activation="nosuch"), "unknown activation 'nosuch'"),
    (dict(dataset="nope"), "unknown dataset 'nope'"),
    (dict(arch="transformer"), "unknown arch"),
    (dict(seeds=0), "seeds must be >= 1"),
    (dict(schemes=("he", "constant")), "unknown scheme 'constant'"),
    (dict(schemes=("orthogonal_hh",)), "orthogonal_hh' needs a recurrent arch"),
    (dict(arch="gru", dataset="mnist1d", seq_mode="row"), "'row' needs 2-D images"),
    (dict(depths=[]), "depths is empty"),
])
def test_check_config_rejects_before_loading_data(monkeypatch, kwargs, message):
    import sys

    cmp = sys.modules["initwise.experiments.compare"]  # the function `compare` hides the module

    def no_data(name):
        raise AssertionError("data loaded before validation")

    monkeypatch.setattr(cmp, "load_dataset", no_data)
    args = dict(dataset="digits", arch="mlp", depths=[3], width=8, activation="relu",
                schemes=("torch", "he"), seeds=1, seq_mode="pixel") | kwargs
    with pytest.raises(ValueError, match=message):
        check_config(**args)
    compare_args = {k: v for k, v in args.items() if k != "depths"}
    depths = args["depths"]
    with pytest.raises(ValueError, match=message):
        if len(depths) == 1:
            compare(depth=depths[0], config=TrainConfig(steps=1), **compare_args)
        else:
            sweep(depths=depths, config=TrainConfig(steps=1), **compare_args)


def test_apply_experiment_scheme_rejects_bad_types():
    with pytest.raises(TypeError, match="scheme must be a non-empty string"):
        apply_experiment_scheme(mlp(4, 2, depth=2), 3, seed=0)
    with pytest.raises(TypeError, match="nn.Module"):
        apply_experiment_scheme("model", "he", seed=0)


def test_sweep_writes_depth_plot(tmp_path):
    s = sweep("wine", "mlp", depths=(2, 4), width=8, schemes=("torch", "he"), seeds=1,
              config=TrainConfig(steps=10, eval_every=5))
    assert [c.settings["depth"] for c in s.comparisons] == [2, 4]
    paths = s.write(tmp_path)
    assert (tmp_path / "depth.png").read_bytes()[:4] == b"\x89PNG"
    assert len(list(csv.DictReader(open(paths["csv"])))) == 4
    assert "| 4 |" in (tmp_path / "summary.md").read_text()


# ---------------------------------------------------------------------------- claims + CLI
def test_claim_zero_symmetry_measures_spread(tmp_path):
    result = claim_zero_symmetry(seeds=1, steps=5)
    assert result.measured["zeros_row_spread_final"] == 0.0
    assert result.command == "initwise claim zero_symmetry --seeds 1 --steps 5"
    paths = result.write(tmp_path)
    assert json.loads(open(paths["claim_json"]).read())["name"] == "zero_symmetry"
    assert len(CLAIMS) == 15


def test_claim_orthogonal_rnn_has_the_recurrent_only_ablation():
    result = claim_orthogonal_rnn(seeds=2, steps=2)
    assert result.comparison.schemes == ["torch", "orthogonal_hh", "orthogonal", "auto"]
    torch_acc = {r.seed: r.final_test_acc for r in result.comparison.runs_of("torch")}
    paired = [r.final_test_acc - torch_acc[r.seed]
              for r in result.comparison.runs_of("orthogonal_hh")]
    assert result.measured["orthogonal_hh_minus_torch_by_seed"] == paired
    assert result.reproduced == (all(d > 0 for d in paired)
                                 and result.measured["acc"]["auto"] > result.measured["acc"]["torch"])
    assert "isolates the recurrent weights" in result.statement
    assert "orthogonal_hh - torch" in result.figure


def test_cli_compare_claim_and_errors(tmp_path, capsys):
    from initwise.cli import main

    out = tmp_path / "cli"
    code = main(["compare", "--dataset", "wine", "--depth", "3", "--width", "8", "--schemes",
                 "torch,he", "--seeds", "1", "--steps", "10", "--eval-every", "5",
                 "--out", str(out)])
    assert code == 0
    assert {p.name for p in out.iterdir()} >= {"results.json", "results.csv", "curves.png",
                                               "summary.md"}
    assert main(["claim", "--list"]) == 0
    assert "he_relu_30" in capsys.readouterr().out
    assert main(["compare", "--schemes", "he,bogus", "--steps", "5"]) == 2
    assert "unknown scheme 'bogus'" in capsys.readouterr().err
    assert main(["claim", "nonsense"]) == 2


def test_cli_demo_runs_the_headline_comparison(tmp_path, capsys):
    from initwise.cli import main

    out = tmp_path / "demo"
    assert main(["demo", "--no-profile", "--seeds", "1", "--steps", "2", "--out", str(out)]) == 0
    data = json.loads((out / "results.json").read_text())
    assert data["settings"]["depth"] == 30 and data["settings"]["activation"] == "relu"
    assert data["settings"]["schemes"] == ["torch", "zeros", "small", "xavier", "he", "lecun",
                                           "orthogonal", "auto"]
    assert (out / "curves.png").exists() and (out / "summary.md").exists()
