"""Step 1, render: the whole variant matrix of every recipe, for every platform, with the engine."""

from __future__ import annotations

from bench_util import clock, median


def run(params: dict) -> dict:
    from torchwin import recipes

    platforms = list(params.get("platforms") or ("win-64", "linux-64"))
    dirs = recipes.all_recipe_dirs()
    totals = []
    variants = []
    for _ in range(int(params.get("repeats", 3))):
        started = clock()
        variants = recipes.render(dirs, platforms)
        totals.append(clock() - started)
    # One more pass, recipe by recipe, to show where the time goes.
    per_recipe = {}
    for recipe_dir in dirs:
        started = clock()
        count = len(recipes.render([recipe_dir], platforms))
        per_recipe[recipe_dir.name] = {"variants": count, "seconds": round(clock() - started, 4)}
    middle = median(totals)
    return {
        "platforms": platforms,
        "recipes": len(dirs),
        "variants": len(variants),
        "repeats": len(totals),
        "seconds_best": round(min(totals), 4),
        "seconds_median": round(middle, 4),
        "ms_per_variant": round(1000 * middle / len(variants), 3) if variants else None,
        "per_recipe": per_recipe,
    }
