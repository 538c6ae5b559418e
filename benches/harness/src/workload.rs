//! Keys, values, key distributions and the workloads built from them.
//!
//! Keys are `key_bytes` long: the big-endian `u64` of `2 * i`, then padding, so ascending `i` is
//! ascending keys and `2 * i + 1` is a missing key between two present ones. Values are windows
//! into one buffer of random bytes (incompressible). Every random choice comes from a seeded
//! SplitMix64, so a run replays exactly.

/// SplitMix64: small, fast, good enough to choose keys.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Self {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n.max(1))) >> 64) as u64
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

/// The key of index `i`, `len` bytes (at least 8).
pub fn key(i: u64, len: usize) -> Vec<u8> {
    let mut k = vec![b'k'; len.max(8)];
    k[..8].copy_from_slice(&(i << 1).to_be_bytes());
    k
}

/// A key that is never written, between `key(i)` and `key(i + 1)`.
pub fn missing_key(i: u64, len: usize) -> Vec<u8> {
    let mut k = key(i, len);
    k[..8].copy_from_slice(&((i << 1) | 1).to_be_bytes());
    k
}

/// Incompressible values: windows into one random buffer.
pub struct ValuePool {
    buf: Vec<u8>,
}

impl ValuePool {
    /// A pool for values up to `max_len` bytes.
    pub fn new(max_len: usize, seed: u64) -> Self {
        let len = (4 << 20) + max_len;
        let mut rng = Rng::new(seed);
        let mut buf = Vec::with_capacity(len + 8);
        while buf.len() < len {
            buf.extend_from_slice(&rng.next_u64().to_le_bytes());
        }
        buf.truncate(len);
        ValuePool { buf }
    }

    /// The value of key `i`, version `version`, `len` bytes.
    pub fn value(&self, i: u64, version: u64, len: usize) -> &[u8] {
        let span = (self.buf.len() - len.min(self.buf.len())) as u64;
        let mut r = Rng::new(i.wrapping_mul(31).wrapping_add(version));
        let off = (r.next_u64() % span.max(1)) as usize;
        &self.buf[off..off + len.min(self.buf.len())]
    }
}

/// YCSB's zipfian generator (Gray et al.) with YCSB's scrambling: the popular ranks are hashed
/// across the key space, so hot keys are not neighbours.
#[derive(Clone, Debug)]
pub struct Zipf {
    n: u64,
    theta: f64,
    alpha: f64,
    zetan: f64,
    eta: f64,
}

impl Zipf {
    /// Zipfian over `0..n` with constant `theta` (0 < θ < 1; YCSB uses 0.99).
    pub fn new(n: u64, theta: f64) -> Self {
        let n = n.max(2);
        let zeta = |m: u64| -> f64 { (1..=m).map(|i| 1.0 / (i as f64).powf(theta)).sum() };
        let zetan = zeta(n);
        let zeta2 = zeta(2);
        let alpha = 1.0 / (1.0 - theta);
        let eta = (1.0 - (2.0 / n as f64).powf(1.0 - theta)) / (1.0 - zeta2 / zetan);
        Zipf { n, theta, alpha, zetan, eta }
    }

    /// A rank: 0 is the most popular.
    pub fn rank(&self, rng: &mut Rng) -> u64 {
        let u = rng.unit();
        let uz = u * self.zetan;
        if uz < 1.0 {
            return 0;
        }
        if uz < 1.0 + 0.5f64.powf(self.theta) {
            return 1;
        }
        ((self.n as f64 * (self.eta * u - self.eta + 1.0).powf(self.alpha)) as u64).min(self.n - 1)
    }

    /// A scrambled item in `0..n`.
    pub fn scrambled(&self, rng: &mut Rng) -> u64 {
        fnv(self.rank(rng)) % self.n
    }
}

fn fnv(x: u64) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in x.to_le_bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// How keys are chosen.
#[derive(Clone, Debug)]
pub enum Distribution {
    /// Every key equally likely.
    Uniform,
    /// Scrambled zipfian with this θ.
    Zipfian(f64),
    /// The most recently inserted keys are the most likely (YCSB D): zipfian over recency.
    Latest(f64),
    /// Each thread walks its own slice of the keys in order.
    Sequential,
}

impl Distribution {
    /// Parses `uniform`, `zipfian[:θ]`, `latest[:θ]`, `sequential`.
    pub fn parse(s: &str) -> Option<Distribution> {
        let (name, theta) = match s.split_once(':') {
            Some((n, t)) => (n, t.parse().ok()?),
            None => (s, 0.99),
        };
        match name {
            "uniform" => Some(Distribution::Uniform),
            "zipfian" | "zipf" => Some(Distribution::Zipfian(theta)),
            "latest" => Some(Distribution::Latest(theta)),
            "sequential" | "seq" => Some(Distribution::Sequential),
            _ => None,
        }
    }

    /// The name used in reports.
    pub fn name(&self) -> String {
        match self {
            Distribution::Uniform => "uniform".into(),
            Distribution::Zipfian(t) => format!("zipfian:{t}"),
            Distribution::Latest(t) => format!("latest:{t}"),
            Distribution::Sequential => "sequential".into(),
        }
    }
}

/// Draws key indexes for one thread.
pub struct KeyChooser {
    dist: Distribution,
    zipf: Option<Zipf>,
    n: u64,
    start_seq: u64,
    next_seq: u64,
    end_seq: u64,
}

impl KeyChooser {
    /// A chooser over `n` keys; `slice` is this thread's part of the key space for
    /// `Sequential` (`start..end`).
    pub fn new(dist: &Distribution, n: u64, slice: (u64, u64)) -> Self {
        let zipf = match dist {
            Distribution::Zipfian(t) | Distribution::Latest(t) => Some(Zipf::new(n, *t)),
            _ => None,
        };
        let (start, end) = (slice.0, slice.1.max(slice.0 + 1));
        KeyChooser {
            dist: dist.clone(),
            zipf,
            n: n.max(1),
            start_seq: start,
            next_seq: start,
            end_seq: end,
        }
    }

    /// The next key index. `inserted` is how many keys exist now (for `Latest`).
    pub fn next(&mut self, rng: &mut Rng, inserted: u64) -> u64 {
        match (&self.dist, &self.zipf) {
            (Distribution::Uniform, _) => rng.below(self.n),
            (Distribution::Zipfian(_), Some(z)) => z.scrambled(rng),
            (Distribution::Latest(_), Some(z)) => {
                let newest = inserted.max(1) - 1;
                newest.saturating_sub(z.rank(rng) % inserted.max(1))
            }
            (Distribution::Sequential, _) => {
                let i = self.next_seq;
                self.next_seq = if i + 1 >= self.end_seq { self.start_seq } else { i + 1 };
                i % self.n
            }
            _ => rng.below(self.n),
        }
    }
}

/// A random permutation of `0..n` (Fisher–Yates).
pub fn permutation(n: u64, seed: u64) -> Vec<u64> {
    let mut v: Vec<u64> = (0..n).collect();
    let mut rng = Rng::new(seed);
    for i in (1..v.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        v.swap(i, j);
    }
    v
}

/// One operation a workload issues.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// Point read of an existing key.
    Read,
    /// Overwrite of an existing key.
    Update,
    /// Write of a new key.
    Insert,
    /// Read a range of `scan_len` entries.
    Scan,
    /// Read, then write the same key.
    ReadModifyWrite,
    /// Read of a key that does not exist.
    ReadMissing,
    /// An atomic batch of writes.
    Batch,
    /// Move an amount between two accounts in one transaction (read both, write both).
    Transfer,
    /// Point reads of [`MULTI_GET_KEYS`] existing keys in one call.
    MultiGet,
}

/// Keys per `multiget` operation.
pub const MULTI_GET_KEYS: usize = 32;

impl Op {
    /// Name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Op::Read => "read",
            Op::Update => "update",
            Op::Insert => "insert",
            Op::Scan => "scan",
            Op::ReadModifyWrite => "rmw",
            Op::ReadMissing => "read_missing",
            Op::Batch => "batch",
            Op::Transfer => "transfer",
            Op::MultiGet => "multiget",
        }
    }

    /// Every op, in report order.
    pub const ALL: [Op; 9] = [
        Op::Read,
        Op::Update,
        Op::Insert,
        Op::Scan,
        Op::ReadModifyWrite,
        Op::ReadMissing,
        Op::Batch,
        Op::Transfer,
        Op::MultiGet,
    ];

    /// Index into per-op arrays.
    pub fn index(self) -> usize {
        Op::ALL.iter().position(|o| *o == self).unwrap_or(0)
    }
}

/// An operation mix: cumulative weights over ops.
#[derive(Clone, Debug, PartialEq)]
pub struct Mix(pub Vec<(Op, f64)>);

impl Mix {
    /// Draws an op.
    pub fn pick(&self, rng: &mut Rng) -> Op {
        let total: f64 = self.0.iter().map(|(_, w)| w).sum();
        let mut x = rng.unit() * total;
        for (op, w) in &self.0 {
            if x < *w {
                return *op;
            }
            x -= w;
        }
        self.0.last().map_or(Op::Read, |(op, _)| *op)
    }
}

/// Balance of every account when the `transfer` workload preloads it.
pub const INITIAL_BALANCE: u64 = 1_000_000;

/// Largest amount one transfer moves (each moves `1..=MAX_AMOUNT`).
pub const MAX_AMOUNT: u64 = 100;

/// How many times a transfer re-picks its second account while the engine says both lie in
/// the same partition, before it settles for the last pick (an engine with one partition, or
/// one whose partitions are all but empty, must not spin forever).
pub const SAME_PARTITION_TRIES: usize = 64;

/// What a workload needs before its measured phase, and what it does during it.
#[derive(Clone, Debug, PartialEq)]
pub struct WorkloadSpec {
    /// Name.
    pub name: &'static str,
    /// Load `keys` keys (untimed) before measuring.
    pub preload: bool,
    /// The operation mix.
    pub mix: Mix,
    /// Default key distribution when the user gives none.
    pub default_distribution: &'static str,
    /// Whether keys are visited in order regardless of the distribution (fills, readseq).
    pub ordered: bool,
}

impl WorkloadSpec {
    /// True when the workload never writes in its measured phase (its figures do not depend
    /// on the durability mode).
    pub fn read_only(&self) -> bool {
        self.mix
            .0
            .iter()
            .all(|(op, _)| matches!(op, Op::Read | Op::Scan | Op::ReadMissing | Op::MultiGet))
    }
}

/// Every workload the harness knows.
pub const WORKLOADS: [&str; 19] = [
    "fillseq",
    "fillrandom",
    "fillbatch",
    "overwrite",
    "readrandom",
    "multiget",
    "readmissing",
    "readseq",
    "scan",
    "ycsb_a",
    "ycsb_b",
    "ycsb_c",
    "ycsb_d",
    "ycsb_e",
    "ycsb_f",
    "large",
    "large_1m",
    "transfer",
    "mixed",
];

/// The spec of workload `name`.
pub fn spec(name: &str) -> Option<WorkloadSpec> {
    use Op::*;
    let w = |name, preload, mix: Vec<(Op, f64)>, dist, ordered| WorkloadSpec {
        name,
        preload,
        mix: Mix(mix),
        default_distribution: dist,
        ordered,
    };
    Some(match name {
        "fillseq" => w("fillseq", false, vec![(Insert, 1.0)], "sequential", true),
        "fillrandom" => w("fillrandom", false, vec![(Insert, 1.0)], "uniform", false),
        "fillbatch" => w("fillbatch", false, vec![(Batch, 1.0)], "uniform", false),
        "overwrite" => w("overwrite", true, vec![(Update, 1.0)], "uniform", false),
        "readrandom" => w("readrandom", true, vec![(Read, 1.0)], "uniform", false),
        "multiget" => w("multiget", true, vec![(MultiGet, 1.0)], "uniform", false),
        "readmissing" => w("readmissing", true, vec![(ReadMissing, 1.0)], "uniform", false),
        "readseq" => w("readseq", true, vec![(Scan, 1.0)], "sequential", true),
        "scan" => w("scan", true, vec![(Scan, 1.0)], "uniform", false),
        "ycsb_a" => w("ycsb_a", true, vec![(Read, 0.5), (Update, 0.5)], "zipfian", false),
        "ycsb_b" => w("ycsb_b", true, vec![(Read, 0.95), (Update, 0.05)], "zipfian", false),
        "ycsb_c" => w("ycsb_c", true, vec![(Read, 1.0)], "zipfian", false),
        "ycsb_d" => w("ycsb_d", true, vec![(Read, 0.95), (Insert, 0.05)], "latest", false),
        "ycsb_e" => w("ycsb_e", true, vec![(Scan, 0.95), (Insert, 0.05)], "zipfian", false),
        "ycsb_f" => w("ycsb_f", true, vec![(Read, 0.5), (ReadModifyWrite, 0.5)], "zipfian", false),
        "large" => w("large", false, vec![(Insert, 1.0)], "sequential", true),
        "large_1m" => w("large_1m", false, vec![(Insert, 1.0)], "sequential", true),
        "transfer" => w("transfer", true, vec![(Transfer, 1.0)], "uniform", false),
        "mixed" => w(
            "mixed",
            true,
            vec![(Read, 0.7), (Update, 0.2), (Scan, 0.05), (Insert, 0.05)],
            "zipfian",
            false,
        ),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_sort_like_their_indexes_and_missing_keys_fall_between() {
        assert!(key(1, 16) < key(2, 16));
        assert!(key(1, 16) < missing_key(1, 16) && missing_key(1, 16) < key(2, 16));
        assert_eq!(key(5, 4).len(), 8);
    }

    #[test]
    fn every_workload_has_a_spec() {
        for w in WORKLOADS {
            assert_eq!(spec(w).map(|s| s.name), Some(w));
        }
        assert!(spec("nope").is_none());
    }

    #[test]
    fn distributions_parse() {
        assert!(
            matches!(Distribution::parse("zipfian:0.8"), Some(Distribution::Zipfian(t)) if (t - 0.8).abs() < 1e-9)
        );
        assert!(matches!(Distribution::parse("latest"), Some(Distribution::Latest(_))));
        assert!(Distribution::parse("gaussian").is_none());
    }
}
