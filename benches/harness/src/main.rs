//! `lightning-bench`: run `cargo run --release -p lightning-bench -- --help`.

use clap::Parser;
use lightning_bench::cli::{self, Args};
use lightning_bench::{engine, report, workload};

fn main() {
    let args = Args::parse();
    if args.list {
        println!("workloads: {}", workload::WORKLOADS.join(", "));
        println!("engines in this build: {}", engine::available().join(", "));
        return;
    }
    if !args.markdown.is_empty() {
        match load_runs(&args.markdown) {
            Ok(runs) => print!("{}", lightning_bench::summary::markdown(&runs)),
            Err(e) => {
                eprintln!("lightning-bench: {e}");
                std::process::exit(1);
            }
        }
        return;
    }
    let result = if args.compare.is_empty() {
        cli::run(&args, std::env::args().collect()).and_then(|run| {
            print!("{}", report::table::render(&run));
            report::write_all(&run, &args.out_dir)
        })
    } else {
        report::compare(&args.compare, &args.out_dir)
    };
    match result {
        Ok(files) => {
            // The page and the JSON by name; the per-case .hgrm/.hlog files by count.
            let (named, rest): (Vec<_>, Vec<_>) = files.iter().partition(|f| {
                matches!(f.extension().and_then(|e| e.to_str()), Some("html" | "json"))
            });
            for f in &named {
                eprintln!("wrote {}", f.display());
            }
            if let Some(first) = rest.first() {
                let dir = first.parent().map_or_else(String::new, |d| d.display().to_string());
                eprintln!("wrote {} .hgrm/.hlog files in {dir}", rest.len());
            }
        }
        Err(e) => {
            eprintln!("lightning-bench: {e}");
            std::process::exit(1);
        }
    }
}

fn load_runs(
    paths: &[std::path::PathBuf],
) -> engine::Result<Vec<lightning_bench::model::RunReport>> {
    paths
        .iter()
        .map(|p| {
            let text = std::fs::read_to_string(p)
                .map_err(|e| engine::err(format!("{}: {e}", p.display())))?;
            serde_json::from_str(&text).map_err(|e| engine::err(format!("{}: {e}", p.display())))
        })
        .collect()
}
