"""A plan read from JSON is validated as a whole, and against its model, before any write:
one ValueError naming the entry and the field."""
import copy
import json

import pytest
import torch
from torch import nn

import initwise
from initwise import Plan


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(20, 8, padding_idx=0)
        self.fc1 = nn.Linear(8, 16)
        self.fc2 = nn.Linear(16, 4)
        self.rnn = nn.GRU(4, 4)

    def forward(self, x):
        h = torch.relu(self.fc1(self.emb(x)))
        return self.rnn(torch.tanh(self.fc2(h)))[0]


@pytest.fixture
def data():
    """Net's standard plan as JSON, its (semi-)orthogonal hidden weights turned into the same
    family's normal draw: the checks below edit Gaussian entries (a plan may hold either)."""
    d = json.loads(initwise.plan(Net()).to_json())
    for e in d["entries"]:
        if e["distribution"] == "orthogonal" and e["scheme"].endswith("_orthogonal"):
            e["scheme"], e["distribution"] = e["scheme"].replace("_orthogonal", "_normal"), "normal"
    return d


def entry(data, name):
    i = next(i for i, e in enumerate(data["entries"]) if e["name"] == name)
    return i, data["entries"][i]


def load(data):
    return Plan.from_json(json.dumps(data))


def test_a_plan_round_trips_and_validates_against_its_model(data):
    model = Net()
    assert load(data).validate(model) is not None
    p = Plan.from_json(initwise.plan(model).to_json())
    assert p.validate(model) is p and p == initwise.plan(model)


@pytest.mark.parametrize("text", ["NaN", "Infinity", "-Infinity", "1e400"])
def test_non_finite_numbers_in_the_json_are_rejected(data, text):
    i, e = entry(data, "fc1.weight")
    raw = json.dumps(data).replace(json.dumps(e["std"]), text, 1)
    with pytest.raises(ValueError, match="finite"):
        Plan.from_json(raw)


def test_an_edited_std_must_agree_with_gain_and_fans(data):
    i, e = entry(data, "fc1.weight")
    e["std"] = 0.4
    with pytest.raises(ValueError, match=rf"plan entry {i} \('fc1.weight'\), field 'std': is 0.4, but scheme "
                                         r"'kaiming_normal' with gain 1.41.* Edit std together"):
        load(data)
    e["std"] = e["gain"] / 8 ** 0.5 * (1 + 1e-8)  # within 1e-6 relative: accepted
    load(data)
    e["gain"], e["std"] = 2.0, 2.0 / 8 ** 0.5  # consistent edit: accepted, and drawn so
    p = load(data)
    model = Net()
    p.apply(model, seed=0)
    assert model.fc1.weight.std().item() == pytest.approx(2.0 / 8 ** 0.5, rel=0.1)


def test_the_distribution_is_the_schemes_own(data):
    i, e = entry(data, "fc2.weight")
    e["scheme"] = "xavier_uniform"
    with pytest.raises(ValueError, match=rf"entry {i} \('fc2.weight'\), field 'distribution': is 'normal', "
                                         "but scheme 'xavier_uniform' draws 'uniform'.*xavier_normal"):
        load(data)


def test_gain_null_is_not_one(data):
    i, e = entry(data, "fc2.weight")
    e["gain"] = None
    with pytest.raises(ValueError, match=rf"entry {i} \('fc2.weight'\), field 'gain': is null"):
        load(data)


@pytest.mark.parametrize("bad,match", [("13", "must be a row index"), (13.0, "must be a row index"),
                                       (True, "must be a row index"), (20, "row 20 is outside the weight's 20 rows"),
                                       ([1, "3"], "must be a row index"), ([], "is an empty list")])
def test_padding_idx_is_a_row_index(data, bad, match):
    i, e = entry(data, "emb.weight")
    e["params"]["padding_idx"] = bad
    with pytest.raises(ValueError, match=rf"entry {i} \('emb.weight'\), field 'params.padding_idx': {match}"):
        load(data)


def test_padding_idx_list_of_rows_is_applied(data):
    _, e = entry(data, "emb.weight")
    e["params"]["padding_idx"] = [1, 3]
    model = Net()
    load(data).apply(model, seed=0)
    rows = (model.emb.weight == 0).all(1)
    assert rows.nonzero().flatten().tolist() == [1, 3]


def test_duplicates_and_shared_with(data):
    dup = copy.deepcopy(data)
    dup["entries"].append(copy.deepcopy(entry(dup, "fc1.bias")[1]))
    with pytest.raises(ValueError, match=r"field 'name': 'fc1.bias' is already in plan entry \d"):
        load(dup)
    shared = copy.deepcopy(data)
    i, e = entry(shared, "fc2.bias")
    e["shared_with"] = ["fc1.bias"]
    with pytest.raises(ValueError, match="field 'shared_with': 'fc1.bias' is already in plan entry"):
        load(shared)
    e["shared_with"] = ["fc2.bias"]
    with pytest.raises(ValueError, match="own name"):
        load(shared)
    e["shared_with"] = "fc1.bias"
    with pytest.raises(ValueError, match="must be a list of parameter names"):
        load(shared)


@pytest.mark.parametrize("seed", [1.5, "3", True, -1])
def test_seed_is_an_int(data, seed):
    data["seed"] = seed
    with pytest.raises(ValueError, match="plan field 'seed'"):
        load(data)


@pytest.mark.parametrize("edit,match", [
    (lambda d: d.update(extra=1), "plan field 'extra': unknown field"),
    (lambda d: d.update(initwise_plan=2), "version 2 is not supported"),
    (lambda d: d.update(distribution="laplace"), "plan field 'distribution'"),
    (lambda d: d.update(entries={}), "plan field 'entries': must be a list"),
    (lambda d: d["entries"][0].update(colour="red"), "field 'colour': unknown field"),
    (lambda d: d["entries"][0].update(shape=[20, True]), "field 'shape': must be an integer"),
    (lambda d: d["entries"][0].update(scheme="he"), "field 'scheme': unknown scheme 'he'"),
    (lambda d: d["entries"][0].pop("std"), "field 'std': is missing"),
    (lambda d: entry(d, "fc1.weight")[1]["params"].update(mod="fan_out"), "field 'params.mod': is not a parameter"),
    (lambda d: entry(d, "fc1.weight")[1]["params"].update(mode="fan_sum"), "field 'params.mode'"),
    (lambda d: entry(d, "fc1.weight")[1].update(fan_in="8"), "field 'fan_in': must be a number or null"),
    (lambda d: entry(d, "fc1.weight")[1].update(fan_in=True), "field 'fan_in': must be a number or null, got bool"),
    (lambda d: entry(d, "fc1.bias")[1].update(std=None), "field 'std': is null"),
    (lambda d: entry(d, "rnn.weight_hh_l0")[1]["params"].update(blocks=5), "field 'params.blocks'"),
    (lambda d: entry(d, "rnn.weight_hh_l0")[1].update(std=0.1), "field 'std'.*'orthogonal'"),
])
def test_schema_and_types(data, edit, match):
    edit(data)
    with pytest.raises(ValueError, match=match):
        load(data)


def test_validate_against_the_model():
    model = Net()
    p = initwise.plan(model)
    other = Net()
    other.fc2 = nn.Linear(16, 5)
    with pytest.raises(ValueError, match=r"field 'shape': is \[4, 16\], but Net's fc2.weight has shape \[5, 16\]"):
        p.validate(other)
    extra = Net()
    extra.head = nn.Linear(2, 2)
    with pytest.raises(ValueError, match="'head.weight' of Net is not in the plan"):
        p.validate(extra)
    fewer = Plan([e for e in p if e.name != "fc1.bias"])
    with pytest.raises(ValueError, match="'fc1.bias' of Net is not in the plan"):
        fewer.validate(model)


def test_validate_tied_tensors():
    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(4, 4)
            self.b = nn.Linear(4, 4)
            self.b.weight = self.a.weight

        def forward(self, x):
            return self.b(self.a(x))

    model = Tied()
    p = initwise.plan(model)
    assert p["a.weight"].shared_with == ("b.weight",)
    untied = Tied()
    untied.b.weight = nn.Parameter(torch.empty(4, 4))
    with pytest.raises(ValueError, match="'b.weight' is a different tensor from 'a.weight'"):
        p.validate(untied)
    split = json.loads(p.to_json())
    i, e = entry(split, "a.weight")
    e["shared_with"] = []
    second = copy.deepcopy(e)
    second["name"] = "b.weight"
    split["entries"].append(second)
    with pytest.raises(ValueError, match="is the same tensor as plan entry .* plan it once"):
        load(split).validate(model)


def test_validate_dtypes():
    model = nn.Linear(4, 4).half()
    p = initwise.plan(model)
    p.validate(model)
    p.entries[0].gain, p.entries[0].std = 4e4, initwise.variance_scaling_std(1.6e9, "fan_avg", 4, 4)
    with pytest.raises(ValueError, match="beyond what weight's dtype torch.float16 holds"):
        p.validate(model)
    ints = nn.Linear(4, 4)
    ints.weight = nn.Parameter(torch.zeros(4, 4, dtype=torch.int64), requires_grad=False)
    with pytest.raises(ValueError, match="dtype torch.int64"):
        initwise.plan(nn.Linear(4, 4)).validate(ints)


def test_validate_checks_edits_made_in_python():
    model = Net()
    p = initwise.plan(model)
    p["fc2.weight"].std = 1.0
    with pytest.raises(ValueError, match=r"\('fc2.weight'\), field 'std'"):
        p.validate(model)
    with pytest.raises(ValueError, match="field 'std'"):
        p["fc2.weight"].check()


def test_from_plan_cli_rejects_a_bad_plan_before_any_write(tmp_path):
    from initwise.cli import main

    (tmp_path / "m.py").write_text("from torch import nn\ndef make():\n    return nn.Linear(4, 3)\n")
    target = f"{tmp_path / 'm.py'}:make"
    good = tmp_path / "plan.json"
    assert main(["plan", target, "--plain", "--json", str(good)]) == 0
    text = good.read_text()
    bad = tmp_path / "bad.json"
    e = json.loads(text)["entries"][0]
    bad.write_text(text.replace(json.dumps(e["std"]), "NaN", 1))
    save = tmp_path / "w.pt"
    assert main(["init", target, "--from-plan", str(bad), "--save", str(save), "--quiet"]) == 2
    assert not save.exists()
