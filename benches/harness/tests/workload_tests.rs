//! The workload generators draw what they claim: uniform covers the key space evenly, zipfian
//! is skewed and scrambled, latest favours the newest keys, sequential walks its slice in order,
//! and op mixes come out in their proportions. Fixed seeds: a failure replays exactly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use lightning_bench::workload::{permutation, spec, Distribution, KeyChooser, Mix, Op, Rng, Zipf};

const N: u64 = 10_000;
const DRAWS: usize = 200_000;

fn histogram_of(dist: &Distribution, inserted: u64) -> Vec<u64> {
    let mut counts = vec![0u64; N as usize];
    let mut chooser = KeyChooser::new(dist, N, (0, N));
    let mut rng = Rng::new(7);
    for _ in 0..DRAWS {
        counts[chooser.next(&mut rng, inserted) as usize] += 1;
    }
    counts
}

#[test]
fn uniform_covers_the_key_space_evenly() {
    let counts = histogram_of(&Distribution::Uniform, N);
    let expected = DRAWS as f64 / N as f64; // 20 per key
                                            // Every decile of the key space gets 10 % ± 1 % of the draws.
    for decile in counts.chunks(N as usize / 10) {
        let share = decile.iter().sum::<u64>() as f64 / DRAWS as f64;
        assert!((share - 0.1).abs() < 0.01, "decile share {share}");
    }
    let chi2: f64 = counts.iter().map(|&c| (c as f64 - expected).powi(2) / expected).sum();
    // Chi-square with 9 999 degrees of freedom: mean 9 999, sd ~141; 5 sd of slack.
    assert!(chi2 < 9_999.0 + 5.0 * 141.0, "chi2 {chi2}");
}

#[test]
fn zipfian_is_skewed_and_scrambled() {
    let counts = histogram_of(&Distribution::Zipfian(0.99), N);
    let mut sorted = counts.clone();
    sorted.sort_unstable_by(|a, b| b.cmp(a));
    let top_1_percent: u64 = sorted[..(N as usize / 100)].iter().sum();
    // With theta 0.99 over 10 000 keys, the hottest 1 % of keys take about 40-50 % of draws.
    let share = top_1_percent as f64 / DRAWS as f64;
    assert!(share > 0.35 && share < 0.60, "top 1 % share {share}");
    // Scrambled: the hottest keys are not the first indexes.
    let hottest = counts.iter().enumerate().max_by_key(|(_, &c)| c).map(|(i, _)| i).unwrap();
    let first_hundred: u64 = counts[..100].iter().sum();
    assert!(first_hundred < top_1_percent / 2, "hot keys bunched at the start (hottest {hottest})");
}

#[test]
fn zipfian_ranks_follow_the_power_law() {
    let z = Zipf::new(N, 0.99);
    let mut rng = Rng::new(3);
    let mut ranks = [0u64; 10];
    for _ in 0..DRAWS {
        let r = z.rank(&mut rng);
        if r < 10 {
            ranks[r as usize] += 1;
        }
    }
    // P(rank k) ∝ 1/(k+1)^0.99: rank 0 about twice rank 1, about ten times rank 9.
    let ratio_1 = ranks[0] as f64 / ranks[1] as f64;
    let ratio_9 = ranks[0] as f64 / ranks[9] as f64;
    assert!((1.7..2.3).contains(&ratio_1), "rank0/rank1 {ratio_1}");
    assert!((7.5..12.5).contains(&ratio_9), "rank0/rank9 {ratio_9}");
}

#[test]
fn latest_favours_the_newest_keys() {
    let inserted = 5_000;
    let counts = histogram_of(&Distribution::Latest(0.99), inserted);
    let newest_tenth: u64 = counts[(inserted as usize - 500)..inserted as usize].iter().sum();
    let beyond: u64 = counts[inserted as usize..].iter().sum();
    assert_eq!(beyond, 0, "latest drew a key that does not exist yet");
    assert!(newest_tenth as f64 / DRAWS as f64 > 0.5, "newest 10 % got {newest_tenth}");
    assert!(counts[inserted as usize - 1] > counts[0] * 10);
}

#[test]
fn sequential_walks_each_slice_in_order_and_wraps() {
    let mut chooser = KeyChooser::new(&Distribution::Sequential, N, (100, 105));
    let mut rng = Rng::new(1);
    let drawn: Vec<u64> = (0..12).map(|_| chooser.next(&mut rng, N)).collect();
    assert_eq!(drawn, vec![100, 101, 102, 103, 104, 100, 101, 102, 103, 104, 100, 101]);
}

#[test]
fn permutations_are_permutations() {
    let mut p = permutation(1000, 9);
    assert_ne!(p[..10], (0..10).collect::<Vec<u64>>()[..]);
    p.sort_unstable();
    assert_eq!(p, (0..1000).collect::<Vec<u64>>());
}

#[test]
fn op_mixes_come_out_in_proportion() {
    let mix: Mix = spec("ycsb_b").unwrap().mix;
    let mut rng = Rng::new(11);
    let reads = (0..DRAWS).filter(|_| mix.pick(&mut rng) == Op::Read).count();
    let share = reads as f64 / DRAWS as f64;
    assert!((share - 0.95).abs() < 0.005, "ycsb_b reads {share}");
    let f = spec("ycsb_f").unwrap().mix;
    let rmw = (0..DRAWS).filter(|_| f.pick(&mut rng) == Op::ReadModifyWrite).count();
    assert!((rmw as f64 / DRAWS as f64 - 0.5).abs() < 0.01);
}

#[test]
fn the_same_seed_replays_the_same_keys() {
    let draw = |seed| {
        let mut c = KeyChooser::new(&Distribution::Zipfian(0.99), N, (0, N));
        let mut rng = Rng::new(seed);
        (0..100).map(|_| c.next(&mut rng, N)).collect::<Vec<_>>()
    };
    assert_eq!(draw(5), draw(5));
    assert_ne!(draw(5), draw(6));
}
