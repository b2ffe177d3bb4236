"""The plugin's records are found through the ``ticketforge`` entry-point group."""

import importlib.metadata

import pluggy

from ticketforge import hookspecs
from ticketforge.records import ComponentRecord
from ticketforge_ddpm import DDPMSpec, plugin
from ticketforge_ddpm.presets import CONFIG_OPTIONS, DIFFUSION_KEYS, UNET_KEYS


def load_plugin():
    (ep,) = [ep for ep in importlib.metadata.entry_points(group="ticketforge") if ep.name == "ddpm"]
    assert ep.dist is not None and ep.dist.name == "ticketforge-ddpm"
    return ep.load()


def test_records_through_entry_point():
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    pm.register(load_plugin(), name="ddpm")
    (models,) = pm.hook.ticketforge_models()
    (datasets,) = pm.hook.ticketforge_datasets()
    assert all(isinstance(r, ComponentRecord) for r in models + datasets)
    assert [r.name for r in models] == ["ddpm-unet"]
    assert {r.name for r in datasets} == {"mnist", "mnist-sample", "cifar10", "cifar100", "imagefolder"}
    model = models[0]
    defaults = {o.name: o.default for o in model.options}
    assert {k: defaults.pop(k) for k in ("preset", "prune_input_conv", "prune_output_conv")} == \
        {"preset": "quickstart", "prune_input_conv": True, "prune_output_conv": True}
    assert set(defaults.values()) == {None}  # every other option keeps the preset's value
    spec = model.factory(**{o.name: o.default for o in model.options})  # None: the preset's value
    assert isinstance(spec, DDPMSpec) and spec.config == DDPMSpec.from_preset("quickstart").config


def test_every_config_key_is_an_option():
    assert set(CONFIG_OPTIONS) == set(UNET_KEYS + DIFFUSION_KEYS)
    (model,) = plugin.ticketforge_models()
    assert {o.name for o in model.options} == {"preset", "prune_input_conv", "prune_output_conv", *CONFIG_OPTIONS}


def test_registry_passes_cli_style_model_options():
    """``ticketforge run --preset mnist --model-option ch=32 --model-option ch_mult=[1,2]``"""
    from ticketforge.registry import build_registry

    registry = build_registry(entry_points=False, plugins=[plugin])
    spec = registry.create("models", "ddpm-unet", preset="mnist", ch=32, ch_mult=[1, 2])
    assert (spec.config["preset"], spec.config["ch"], spec.config["ch_mult"]) == ("mnist", 32, [1, 2])


def test_registering_imports_no_torch():
    """``ticketforge list`` loads both entry points: their records name the factories, imported when built."""
    import subprocess
    import sys

    code = ("import sys, ticketforge_ddpm.plugin as p, ticketforge_ddpm.evaluation.plugin as e; "
            "records = p.ticketforge_models() + p.ticketforge_datasets() + e.ticketforge_evaluators(); "
            "print(len(records), [m for m in ('torch', 'torchvision') if m in sys.modules])")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.stdout.split(maxsplit=1) == ["9", "[]\n"], done.stderr
