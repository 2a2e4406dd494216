"""Each schedule's phase list, asserted literally, and the equal budget."""

import pytest

from medalpy.errors import ConfigError
from medalpy.schedules import Phase, budget_units, build_schedule, classifier_schedule

LAYER1 = Phase("1:layer", "layer1", 1, 50, (0,), 0, "new")
LAYER1_KEPT = Phase("1:layer", "layer1", 1, 50, (0,), 0, "new", keep_decoder=True)


def test_stacked_two_layers():
    phases, ev = build_schedule("stacked", 2, 50, 80)
    assert phases == [LAYER1_KEPT, Phase("2:stacked", "stacked", 2, 160, (1,), 1, "new",
                                         keep_decoder=True, then_mirror=True)]
    assert ev == "mirror"


def test_gradual_two_layers():
    phases, ev = build_schedule("gradual", 2, 50, 80)
    assert phases == [LAYER1, Phase("2:gradual", "gradual", 2, 80, (0, 1), 0, "new")]
    assert ev == "direct"


def test_hybrid_quarter_is_the_papers_2nf_and_n1mf():
    phases, ev = build_schedule("hybrid", 2, 50, 80, fraction=0.25)
    assert phases == [LAYER1,
                      Phase("2:stacked", "stacked", 2, 40, (1,), 1, "new"),
                      Phase("2:gradual", "gradual", 2, 60, (0, 1), 0, "new")]
    assert ev == "direct"


def test_hybrid_ends_are_pure_schedules():
    assert build_schedule("hybrid", 2, 50, 80, fraction=1.0)[0] == \
        build_schedule("stacked", 2, 50, 80)[0]
    assert build_schedule("hybrid", 2, 50, 80, fraction=0.0)[0] == \
        build_schedule("gradual", 2, 50, 80)[0]


def test_frozen_lower_ablation():
    phases, _ = build_schedule("frozen_lower", 2, 50, 80)
    assert phases == [LAYER1, Phase("2:frozen_lower", "frozen_lower", 2, 160, (1,), 0, "new")]


def test_three_layers_gradual_and_stacked():
    gradual, _ = build_schedule("gradual", 3, 5, 4)
    assert [(p.name, p.epochs, p.trainable, p.input_level) for p in gradual] == [
        ("1:layer", 5, (0,), 0), ("2:gradual", 4, (0, 1), 0), ("3:gradual", 4, (0, 1, 2), 0)]
    stacked, _ = build_schedule("stacked", 3, 5, 4)
    assert [(p.name, p.epochs, p.trainable, p.input_level) for p in stacked] == [
        ("1:layer", 5, (0,), 0), ("2:stacked", 8, (1,), 1), ("3:stacked", 12, (2,), 2)]


@pytest.mark.parametrize("n_layers", [2, 3, 4])
@pytest.mark.parametrize("budget", [7, 80])
def test_budget_units_equal_across_compared_schedules(n_layers, budget):
    runs = [("stacked", None), ("gradual", None), ("frozen_lower", None)]
    runs += [("hybrid", f) for f in (0.0, 0.25, 1 / 3, 0.5, 0.75, 0.9, 1.0)]
    units = {(m, f): budget_units(build_schedule(m, n_layers, 3, budget, fraction=f)[0])
             for m, f in runs}
    expected = 3 + sum(k * budget for k in range(2, n_layers + 1))
    assert set(units.values()) == {expected}, units


def test_tail_phases_fit_decoder_and_finetune():
    phases, ev = build_schedule("stacked", 2, 5, 4, eval_decoder="direct", finetune_epochs=3)
    assert ev == "direct"
    assert phases[-2:] == [Phase("fit_decoder", "fit_decoder", 2, 4, (), 0, "new", counted=False),
                           Phase("finetune", "finetune", 2, 3, (0, 1), 0, "current",
                                 counted=False)]
    assert not any(p.keep_decoder for p in phases)
    phases, ev = build_schedule("stacked", 2, 5, 4, finetune_epochs=3)
    assert phases[-1].decoder == "current" and phases[-2].then_mirror and ev == "mirror"
    phases, ev = build_schedule("gradual", 2, 5, 4, eval_decoder="mirror")
    assert phases[-1].decoder == "new_mirror" and budget_units(phases) == 5 + 8
    phases, _ = build_schedule("gradual", 2, 5, 4, eval_decoder="mirror", fit_decoder_epochs=7)
    assert phases[-1] == Phase("fit_decoder", "fit_decoder", 2, 7, (), 0, "new_mirror",
                               counted=False)


def test_a_hybrid_whose_gradual_part_rounds_to_nothing_is_stacked_and_f_0_is_gradual():
    """f = 0.9 of a budget of 4 leaves round(0.4) = 0 gradual epochs: the schedule, its
    decoders and its evaluation decoder are stacked's; a 1-layer hybrid is layer 1 alone."""
    assert build_schedule("hybrid", 2, 5, 4, fraction=0.9) == build_schedule("stacked", 2, 5, 4)
    assert build_schedule("hybrid", 1, 5, 4, fraction=1.0) == build_schedule("stacked", 1, 5, 4)
    assert build_schedule("hybrid", 1, 5, 4, fraction=0.5) == build_schedule("gradual", 1, 5, 4)
    assert build_schedule("hybrid", 2, 5, 4, fraction=0.0) == build_schedule("gradual", 2, 5, 4)


@pytest.mark.parametrize("kwargs", [{"budget": -1}, {"finetune_epochs": -1}])
def test_a_negative_budget_or_tuning_is_refused(kwargs):
    args = {"budget": 4, **kwargs}
    budget = args.pop("budget")
    with pytest.raises(ConfigError, match=r"^budget and fine-tuning epochs must not be negative$"):
        build_schedule("gradual", 2, 5, budget, **args)


@pytest.mark.parametrize("kwargs, message", [
    ({"method": "greedy"}, "unknown method"),
    ({"method": "hybrid"}, "fraction"),
    ({"method": "gradual", "fraction": 0.5}, "fraction"),
    ({"method": "hybrid", "fraction": 1.5}, "in \\[0, 1\\]"),
    ({"method": "gradual", "eval_decoder": "tied"}, "eval decoder"),
])
def test_bad_schedules_are_refused(kwargs, message):
    kwargs = dict(kwargs)  # the parameters are shared between runs of the test: leave them be
    method = kwargs.pop("method")
    with pytest.raises(ConfigError, match=message):
        build_schedule(method, 2, 5, 4, **kwargs)


def test_the_ablation_under_equal_epochs_gets_gradual_epochs_not_its_updates():
    from medalpy.schedules import build_schedule, budget_units

    for n_layers in (2, 3):
        updates, _ = build_schedule("frozen_lower", n_layers, 4, 6)
        epochs, _ = build_schedule("frozen_lower", n_layers, 4, 6, ablation_budget="epochs")
        gradual, _ = build_schedule("gradual", n_layers, 4, 6)
        assert [p.epochs for p in epochs] == [p.epochs for p in gradual] == [4] + [6] * (
            n_layers - 1)
        assert [p.epochs for p in updates] == [4] + [6 * k for k in range(2, n_layers + 1)]
        assert budget_units(updates) == budget_units(gradual)
        assert budget_units(epochs) == 4 + 6 * (n_layers - 1)
        assert [p.trainable for p in epochs] == [p.trainable for p in updates]
    with pytest.raises(ConfigError, match="ablation budget"):
        build_schedule("frozen_lower", 2, 4, 6, ablation_budget="steps")


def test_the_schedule_a_result_records_is_every_field_as_json():
    """``metrics.json`` records the schedule as ``Phase.to_dict``: the fields, the trainable
    layers as a list, the budget units, and ``lower_lr`` only where a phase has one."""
    phases, _ = build_schedule("gradual", 2, 3, 2, lower_lr="linear")
    common = {"input_level": 0, "decoder": "new", "keep_decoder": False, "then_mirror": False,
              "counted": True}
    assert [p.to_dict() for p in phases] == [
        {"name": "1:layer", "kind": "layer1", "depth": 1, "epochs": 3, "trainable": [0],
         "units": 3, **common},
        {"name": "2:gradual", "kind": "gradual", "depth": 2, "epochs": 2, "trainable": [0, 1],
         "units": 4, "lower_lr": "linear", **common}]


def test_the_classifier_schedule_trains_every_layer_from_the_input_outside_the_budget():
    assert classifier_schedule(2, 30) == [
        Phase("classify", "supervised", 2, 30, (0, 1), 0, "classifier", counted=False)]
    assert budget_units(classifier_schedule(2, 30)) == 0
