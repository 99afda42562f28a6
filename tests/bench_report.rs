//! `make bench`'s report draws its figures: re-rendered from the recorded run
//! (`bench/results.json`), docs/benchmarks.md embeds an SVG of throughput and one of CPU per GB,
//! with one bar per tool and workload at the run's median.

use std::path::Path;
use std::process::Command;

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = xs.len();
    if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    }
}

#[test]
fn the_report_embeds_a_chart_of_each_measure_with_every_tool() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = tempfile::tempdir().unwrap();
    let report = out.path().join("benchmarks.md");
    let run = Command::new("python3")
        .arg(repo.join("bench/bench.py"))
        .env("BENCH_RENDER", "1")
        .env("BENCH_OUT", &report)
        .env("BENCH_RESULTS", repo.join("bench/results.json"))
        .output()
        .expect("python3");
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let text = std::fs::read_to_string(&report).unwrap();
    let results: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(repo.join("bench/results.json")).unwrap())
            .unwrap();
    for (svg, key) in [("throughput.svg", "mbps"), ("cpu.svg", "cpu_s_per_gb")] {
        assert!(
            text.contains(&format!("](bench/{svg})")),
            "{svg} is embedded"
        );
        let chart = std::fs::read_to_string(out.path().join("bench").join(svg)).unwrap();
        assert!(chart.starts_with("<svg ") && chart.trim_end().ends_with("</svg>"));
        for w in ["W1", "W2", "W3"] {
            for (cfg, runs) in results["results"][w]["runs"].as_object().unwrap() {
                let m = median(
                    runs.as_array()
                        .unwrap()
                        .iter()
                        .map(|r| r[key].as_f64().unwrap())
                        .collect(),
                );
                let bar = format!("<title>{cfg}: {m:.2}</title>");
                assert!(chart.contains(&bar), "{svg}: no bar {bar}");
            }
        }
    }
}
