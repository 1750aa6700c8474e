"""Make `dvc plots show` work offline: write the HTML template that .dvc/config names
(plots.html_template), with Vega, Vega-Lite and Vega-Embed inlined instead of DVC's default page,
which loads them from a CDN and stays blank without a network. `make setup` runs this once.

    python pipelines/offline_plots.py          # writes .dvc/offline_plots.html
    python pipelines/offline_plots.py --out F  # elsewhere (dvc plots show --html-template F)

The libraries come from vl-convert-python (the Vega project's own bundler), pinned in
requirements.lock, so the page draws the same in every checkout.
"""

import argparse
from pathlib import Path

TEMPLATE = Path(__file__).resolve().parents[1] / ".dvc" / "offline_plots.html"
VEGA_LITE = "5.21"  # DVC's plot templates are written for Vega-Lite 5

# DVC fills {plot_divs} with one <div> per plot, each calling vegaEmbed(id, spec) as the page is
# parsed. The inlined bundle is an ES module, which runs only after parsing: until then the calls
# wait in a queue, and the bundle plays them back (drawn as SVG, without the actions menu).
QUEUE = """window.vegaEmbed = function (el, spec) {
  (window.vegaQueue = window.vegaQueue || []).push([el, spec]);
};"""
PLAY_BACK = """const queued = window.vegaQueue || [];
window.vegaEmbed = (el, spec, options) => vegaEmbed(el, spec, { renderer: "svg", actions: false, ...options });
for (const [el, spec] of queued) window.vegaEmbed(el, spec);"""
PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
{refresh_tag}
<title>DVC plots</title>
<script>QUEUE</script>
<script type="module">BUNDLE</script>
<style>body { font-family: system-ui, sans-serif; } div { max-width: 100%; overflow-x: auto; }</style>
</head>
<body>
{plot_divs}
</body>
</html>
"""


def template() -> str:
    """The page, Vega inlined; DVC replaces {refresh_tag} and {plot_divs} (and nothing in the bundle)."""
    import vl_convert

    bundle = vl_convert.javascript_bundle(PLAY_BACK, vl_version=VEGA_LITE)
    for placeholder in ("{plot_divs}", "{refresh_tag}", "{scripts}", "</script"):
        if placeholder in bundle:  # DVC would fill it in, or the browser end the script there
            raise RuntimeError(f"the Vega bundle contains {placeholder!r}; it cannot be inlined as is")
    return PAGE.replace("QUEUE", QUEUE).replace("BUNDLE", bundle)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=TEMPLATE, help=f"where to write it (default: {TEMPLATE})")
    args = parser.parse_args()
    from mnist_np.files import atomic_path

    with atomic_path(args.out) as tmp:
        tmp.write_text(template(), encoding="utf-8")
    print(f"wrote {args.out}: dvc plots show now draws without a network")


if __name__ == "__main__":
    from mnist_np import cli

    cli.run(main)
