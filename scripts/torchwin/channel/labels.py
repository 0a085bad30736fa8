"""Which label of our channel a recipe's packages go into (channel_labels), and which extra labels
an install needs: those holding the only match of a dependency (dependency_labels).

The CUDA 9.1 builds of pytorch sit in label main but need `cudatoolkit 9.1.*`, which only the
cuda-runtime label carries (defaults never had it). Their install line, the page's command
and a local build's test environment must add that label; a 9.0 build must not get it,
because under strict channel priority the label would hide defaults' cudatoolkit 9.0.
"""

from __future__ import annotations

from rattler import MatchSpec, Version, VersionSpec

from torchwin.channel.config import EXTRA_KEY, MAIN, load_channel_config
from torchwin.recipes import RECIPE_FILE, display_path


def dependency_labels(label, subdir, depends, records) -> list:
    """Labels other than `label` and main holding what one of `depends` needs and those two lack.

    `records`: objects with .label, .name, .version, .subdir and .depends (match-spec strings),
    e.g. records.collect()'s entries. A record only counts when its own dependencies
    leave room for `depends`: the label's cudnn 7.1.3 matches a 9.0 build's `cudnn 7.*` by
    version, but needs cudatoolkit 9.1, which that build excludes.
    """
    specs = specs_by_name(depends)
    near = {r.name for r in records if r.label in (label, MAIN)}
    found = []
    for name, version in specs.items():
        if name in near:
            continue
        for r in records:
            if r.label in (label, MAIN) or r.label in found or r.name != name or r.subdir not in (subdir, "noarch"):
                continue
            if _matches(version, r.version) and _leaves_room(r, specs, records):
                found.append(r.label)
    return found


def specs_by_name(depends) -> dict:
    """{name: version spec or None} of match-spec strings; ones the solver would refuse are left out."""
    out = {}
    for dep in depends:
        try:
            spec = MatchSpec(dep)
        except Exception:
            continue
        out[spec.name.normalized] = None if spec.version is None else str(spec.version)
    return out


def _matches(version_spec, version) -> bool:
    return version_spec is None or VersionSpec(version_spec).matches(Version(version))


def _leaves_room(record, wanted, records) -> bool:
    """For each name both `record` and `wanted` constrain, some record satisfies both."""
    for name, version in specs_by_name(record.depends).items():
        if name in wanted and not any(other.name == name and _matches(version, other.version)
                                      and _matches(wanted[name], other.version) for other in records):
            return False
    return True


def channel_labels(variants, config=None) -> dict:
    """id(variant) -> the channel label its packages go into: main, or the one its recipe names.

    A recipe names one with `extra: {torchwin: {label: L}}`; channel.yaml is read (and L checked
    against its labels) only when some recipe does.
    """
    extras = {id(v): _extra(v) for v in variants}
    if not any(EXTRA_KEY in extra for extra in extras.values()):
        return {id(v): MAIN for v in variants}
    config = config or load_channel_config()
    return {id(v): config.pinned_label(extras[id(v)], display_path(v.recipe_dir / RECIPE_FILE))
            or MAIN for v in variants}


def _extra(variant) -> dict:
    """The recipe's `extra:` mapping as rendered for this variant ({} when it has none)."""
    recipe = getattr(variant.rendered, "recipe", None)
    extra = recipe.to_dict().get("extra") if recipe is not None else None
    return extra if isinstance(extra, dict) else {}
