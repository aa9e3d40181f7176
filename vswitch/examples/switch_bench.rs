//! `cargo xtask bench switch` runs this in a release build: the datapath between two guests'
//! queues in one process (see `kaos_vswitch::bench`), one tab-separated line per figure:
//! `name<TAB>switch<TAB>anchor`. The last row sets the flow cache against the same switch
//! without it.

use kaos_vswitch::bench::{self, CASES};

fn main() {
    let runs: usize = std::env::var("KAOS_BENCH_RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(5);
    // `KAOS_BENCH_CASE=64` runs only the cases whose name starts with that, `flow` only the
    // flow cache's row (for profiling: one case's frames per callgrind run).
    let only = std::env::var("KAOS_BENCH_CASE").unwrap_or_default();
    for case in CASES
        .into_iter()
        .filter(|c| c.name.starts_with(only.as_str()))
    {
        let results = match bench::measure(case, runs) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("switch bench {}: {e}", case.name);
                std::process::exit(1);
            }
        };
        let mut sw: Vec<f64> = results.iter().map(|r| r.switch_fps).collect();
        let mut mc: Vec<f64> = results.iter().map(|r| r.memcpy_fps).collect();
        let (sw, mc) = (bench::median(&mut sw), bench::median(&mut mc));
        if case.len <= 64 {
            println!(
                "switch, {}, guest to guest\t{:.2} Mpps\tmemcpy of the same frames {:.2} Mpps ({:.2}x)",
                case.name,
                sw / 1e6,
                mc / 1e6,
                sw / mc
            );
        } else {
            let gbit = |fps: f64| fps * case.len as f64 * 8.0 / 1e9;
            println!(
                "switch, {}, guest to guest\t{:.1} Gbit/s ({:.2} Mpps)\tmemcpy of the same frames {:.1} Gbit/s ({:.2}x)",
                case.name,
                gbit(sw),
                sw / 1e6,
                gbit(mc),
                sw / mc
            );
        }
    }
    // The flow cache against the decision core deciding every frame.
    let case = CASES[0];
    if "flow cache".starts_with(only.as_str()) {
        let results = match bench::measure_flow_cache(case, runs) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("switch bench, flow cache: {e}");
                std::process::exit(1);
            }
        };
        let mut with: Vec<f64> = results.iter().map(|r| r.0).collect();
        let mut without: Vec<f64> = results.iter().map(|r| r.1).collect();
        let (with, without) = (bench::median(&mut with), bench::median(&mut without));
        println!(
            "switch, {}, with the flow cache\t{:.2} Mpps\tthe same switch without it {:.2} Mpps ({:.2}x)",
            case.name,
            with / 1e6,
            without / 1e6,
            with / without
        );
    }
}
