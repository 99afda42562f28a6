"""SVG charts of a benchmark run (throughput and CPU per GB, per tool and workload), drawn by hand
in plain SVG so that `make bench` needs no plotting library. bench.py calls `write_charts`."""

import html
import os
import statistics

# One colour per tool family, Outbound first; the same tool keeps its colour in every chart.
PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
           "#7f7f7f", "#bcbd22", "#17becf"]


def _med(xs):
    return statistics.median(xs) if xs else float("nan")


def series(results, key):
    """[(workload, [(config, median of key)])] for the throughput workloads of a run."""
    out = []
    for wname in ("W1", "W2", "W3", "W6"):
        w = results.get(wname)
        if not w:
            continue
        rows = [(cfg, _med([r[key] for r in runs if key in r])) for cfg, runs in w["runs"].items()]
        out.append((wname, [(c, v) for c, v in rows if v == v]))  # drop NaN (no such figure)
    return out


def bar_chart(title, unit, groups, reference=None, better="higher"):
    """A grouped horizontal bar chart: one block per workload, one bar per config, the value
    printed at the bar's end. `reference` (label, value) draws a dashed vertical line."""
    configs = []
    for _, rows in groups:
        for c, _ in rows:
            if c not in configs:
                configs.append(c)
    colour = {c: PALETTE[i % len(PALETTE)] for i, c in enumerate(configs)}
    label_w, bar_h, gap, top, right = 190, 16, 14, 56, 90
    plot_w = 520
    vmax = max([v for _, rows in groups for _, v in rows] + [reference[1] if reference else 0]) or 1
    height = top + sum(len(rows) * bar_h + gap + 18 for _, rows in groups) + 40
    width = label_w + plot_w + right
    svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">',
           f'<rect width="{width}" height="{height}" fill="white"/>',
           f'<text x="10" y="22" font-size="15" font-weight="bold">{html.escape(title)}</text>',
           f'<text x="10" y="40" fill="#555">{html.escape(unit)}, median of the runs; '
           f'{"higher" if better == "higher" else "lower"} is better</text>']
    y = top
    for wname, rows in groups:
        svg.append(f'<text x="10" y="{y + 12}" font-weight="bold">{html.escape(wname)}</text>')
        y += 18
        for cfg, v in rows:
            w = plot_w * v / vmax
            svg.append(f'<text x="{label_w - 6}" y="{y + bar_h - 4}" text-anchor="end">'
                       f'{html.escape(cfg)}</text>')
            svg.append(f'<rect x="{label_w}" y="{y}" width="{w:.1f}" height="{bar_h - 3}" '
                       f'fill="{colour[cfg]}"><title>{html.escape(cfg)}: {v:.2f}</title></rect>')
            svg.append(f'<text x="{label_w + w + 4:.1f}" y="{y + bar_h - 4}">'
                       f'{v:.0f}</text>' if v >= 10 else
                       f'<text x="{label_w + w + 4:.1f}" y="{y + bar_h - 4}">{v:.2f}</text>')
            y += bar_h
        y += gap
    if reference:
        x = label_w + plot_w * reference[1] / vmax
        svg.append(f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{y}" stroke="#444" '
                   f'stroke-dasharray="4 3"/>')
        svg.append(f'<text x="{x:.1f}" y="{y + 14}" text-anchor="middle" fill="#444">'
                   f'{html.escape(reference[0])} {reference[1]:.0f}</text>')
    svg.append("</svg>")
    return "\n".join(svg) + "\n"


def write_charts(R, out_dir):
    """Writes throughput.svg and cpu.svg for run R into out_dir; returns their file names."""
    os.makedirs(out_dir, exist_ok=True)
    results = R["results"]
    ceiling = ("server ceiling", R["ceiling_mbps"]) if R.get("ceiling_mbps") else None
    charts = {
        "throughput.svg": bar_chart("Throughput per tool and workload", "MB/s",
                                    series(results, "mbps"), ceiling),
        "cpu.svg": bar_chart("Client CPU per GB per tool and workload", "CPU seconds per GB",
                             series(results, "cpu_s_per_gb"), better="lower"),
    }
    for name, text in charts.items():
        with open(os.path.join(out_dir, name), "w") as f:
            f.write(text)
    return list(charts)
