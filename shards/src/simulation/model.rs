//! The simulation's model of one shard: what it holds for sure, the writes sent to it since,
//! and what each reply said; the checks a recovered shard and a read must pass.
//!
//! A shard's log is a prefix of the writes it placed, in the order they reached its queue (one
//! queue, drained in order). So after any crash the recovered state must equal the base plus
//! exactly the first K placed writes, for some K at least as large as the mode's promise
//! demands: that one check covers lost acknowledged writes, torn values and half-applied
//! batches alike.

use std::collections::BTreeMap;

use crate::error::Error;
use crate::wal::record::WriteOp;

/// What a write's reply said, or that none came.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// No reply yet.
    Pending,
    /// Acknowledged: its mode's promise holds.
    Acked,
    /// Failed after it may have been placed in the log (an I/O error, or the shard stopped).
    InDoubt,
    /// Refused before it was placed (the shard was poisoned, or the disk was full).
    NotPlaced,
}

impl Outcome {
    /// The outcome a reply means.
    pub fn of(result: &Result<(), Error>) -> Outcome {
        match result {
            Ok(()) => Outcome::Acked,
            Err(Error::Poisoned { .. }) => Outcome::NotPlaced,
            Err(e) if e.is_disk_full() => Outcome::NotPlaced,
            Err(_) => Outcome::InDoubt,
        }
    }
}

/// A write sent to the shard.
#[derive(Clone, Debug)]
pub struct Sent {
    /// Its operations (one record).
    pub ops: Vec<WriteOp>,
    /// What its reply said.
    pub outcome: Outcome,
}

/// The state a shard holds: key → value.
pub type State = BTreeMap<Vec<u8>, Vec<u8>>;

/// One shard, as the simulation believes it to be.
#[derive(Debug, Default)]
pub struct ShardModel {
    /// What the shard held at its last open, checked then.
    pub base: State,
    /// Writes sent since, in queue order.
    pub sent: Vec<Sent>,
    /// Every write sent before this index is covered by an acknowledged `sync()`.
    pub synced_upto: usize,
}

/// Which writes must survive a crash.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Survive {
    /// Every acknowledged write (a process crash, or a power loss in `Sync` mode, or after a
    /// clean close).
    Acknowledged,
    /// Only the writes a completed `sync()` covered (a power loss in `Normal`/`Async`).
    Synced,
}

impl ShardModel {
    /// Records a write sent; returns its index.
    pub fn send(&mut self, ops: Vec<WriteOp>) -> usize {
        self.sent.push(Sent { ops, outcome: Outcome::Pending });
        self.sent.len() - 1
    }

    /// The outcome of write `i`.
    pub fn reply(&mut self, i: usize, outcome: Outcome) {
        if let Some(s) = self.sent.get_mut(i) {
            s.outcome = outcome;
        }
    }

    /// A `sync()` sent when `sent_before` writes had been sent was acknowledged.
    pub fn synced(&mut self, sent_before: usize) {
        self.synced_upto = self.synced_upto.max(sent_before);
    }

    /// Writes still waiting for a reply become doubtful (the process died).
    pub fn crash(&mut self) {
        for s in &mut self.sent {
            if s.outcome == Outcome::Pending {
                s.outcome = Outcome::InDoubt;
            }
        }
    }

    /// Checks the state a shard recovered to, then makes it the new base. `Err` says what is
    /// wrong.
    pub fn recovered(&mut self, got: State, survive: Survive) -> Result<(), String> {
        let placed: Vec<&Sent> =
            self.sent.iter().filter(|s| s.outcome != Outcome::NotPlaced).collect();
        let must = match survive {
            Survive::Acknowledged => {
                placed.iter().rposition(|s| s.outcome == Outcome::Acked).map_or(0, |i| i + 1)
            }
            Survive::Synced => {
                let synced = self.sent[..self.synced_upto.min(self.sent.len())]
                    .iter()
                    .filter(|s| s.outcome != Outcome::NotPlaced)
                    .count();
                // A synced write that was in doubt may not be in the log at all.
                placed[..synced]
                    .iter()
                    .rposition(|s| s.outcome == Outcome::Acked)
                    .map_or(0, |i| i + 1)
            }
        };
        let mut state = self.base.clone();
        let mut matched = None;
        for k in 0..=placed.len() {
            if k > 0 {
                apply(&mut state, &placed[k - 1].ops);
            }
            if k >= must && state == got {
                matched = Some(k);
                break;
            }
        }
        if matched.is_none() {
            let mut best = (usize::MAX, 0);
            let mut st = self.base.clone();
            for k in 0..=placed.len() {
                if k > 0 {
                    apply(&mut st, &placed[k - 1].ops);
                }
                let diff =
                    st.keys().chain(got.keys()).filter(|key| st.get(*key) != got.get(*key)).count();
                if diff < best.0 {
                    best = (diff, k);
                }
            }
            let mut outcomes: Vec<String> =
                placed.iter().map(|s| format!("{:?}", s.outcome)).collect();
            let mut st = self.base.clone();
            for s in &placed[..best.1] {
                apply(&mut st, &s.ops);
            }
            for key in st.keys().chain(got.keys()) {
                if st.get(key) != got.get(key) {
                    let writers: Vec<usize> = (0..placed.len())
                        .filter(|&i| placed[i].ops.iter().any(|op| op.key() == key.as_slice()))
                        .collect();
                    let lens: Vec<String> = writers
                        .iter()
                        .map(|&i| {
                            format!(
                                "{i}:{:?}",
                                last_write_to(&placed[i].ops, key).map(|v| v.map(|v| v.len()))
                            )
                        })
                        .collect();
                    outcomes.push(format!(
                        "[{} want {:?} got {:?} writers {}]",
                        String::from_utf8_lossy(key),
                        st.get(key).map(Vec::len),
                        got.get(key).map(Vec::len),
                        lens.join(" ")
                    ));
                }
            }
            return Err(format!(
                "closest prefix: {} writes, {} keys differ; outcomes: {}; ",
                best.1,
                best.0,
                outcomes.join(",")
            ) + &format!(
                "the recovered state matches no prefix of the {} writes placed with at least \
                 {must} of them ({survive:?} must survive); recovered {} keys: {}",
                placed.len(),
                got.len(),
                describe_difference(&self.base, &placed, must, &got)
            ));
        }
        self.base = got;
        self.sent.clear();
        self.synced_upto = 0;
        Ok(())
    }

    /// The values a read of `key` may return after write `i` (which touched `key`) was
    /// acknowledged: its own, or that of any later write to `key` that may have been placed.
    pub fn readable_after(&self, i: usize, key: &[u8]) -> Vec<Option<Vec<u8>>> {
        let mut out = Vec::new();
        for s in self.sent.iter().skip(i).filter(|s| s.outcome != Outcome::NotPlaced) {
            if let Some(v) = last_write_to(&s.ops, key) {
                out.push(v);
            }
        }
        out
    }
}

/// The value the last op on `key` in `ops` leaves (`Some(None)`: deleted), if any touches it.
fn last_write_to(ops: &[WriteOp], key: &[u8]) -> Option<Option<Vec<u8>>> {
    ops.iter().rev().find(|op| op.key() == key).map(|op| op.value().map(<[u8]>::to_vec))
}

/// Applies one record's operations in order.
pub fn apply(state: &mut State, ops: &[WriteOp]) {
    for op in ops {
        match op {
            WriteOp::Put { key, value } => {
                state.insert(key.clone(), value.to_vec());
            }
            WriteOp::Delete { key } => {
                state.remove(key);
            }
        }
    }
}

fn describe_difference(base: &State, placed: &[&Sent], must: usize, got: &State) -> String {
    let mut want = base.clone();
    for s in &placed[..must.min(placed.len())] {
        apply(&mut want, &s.ops);
    }
    let mut diffs = Vec::new();
    for key in want.keys().chain(got.keys()) {
        let (w, g) = (want.get(key), got.get(key));
        if w != g && diffs.len() < 4 {
            let show =
                |v: Option<&Vec<u8>>| v.map_or("absent".to_string(), |v| format!("{} B", v.len()));
            diffs.push(format!(
                "{}: after the {must} writes that must survive {}, recovered {}",
                String::from_utf8_lossy(key),
                show(w),
                show(g)
            ));
        }
    }
    diffs.dedup();
    diffs.join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(k: &str, v: &str) -> WriteOp {
        WriteOp::Put { key: k.as_bytes().to_vec(), value: v.as_bytes().into() }
    }

    fn state(pairs: &[(&str, &str)]) -> State {
        pairs.iter().map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec())).collect()
    }

    #[test]
    fn a_prefix_passes_and_a_hole_or_half_batch_fails() {
        let mut m = ShardModel::default();
        let a = m.send(vec![put("a", "1")]);
        let b = m.send(vec![put("b", "1"), put("c", "1")]);
        m.reply(a, Outcome::Acked);
        m.crash();
        assert_eq!(m.sent[b].outcome, Outcome::InDoubt);
        assert!(m.recovered(state(&[("a", "1")]), Survive::Acknowledged).is_ok());

        let a = m.send(vec![put("a", "2")]);
        let b = m.send(vec![put("b", "2"), put("c", "2")]);
        m.reply(a, Outcome::Acked);
        m.reply(b, Outcome::InDoubt);
        // Half of the batch: no prefix gives it.
        let half = state(&[("a", "2"), ("b", "2")]);
        assert!(m.recovered(half, Survive::Acknowledged).is_err());
        // The acknowledged write missing: refused too.
        assert!(m.recovered(state(&[("a", "1")]), Survive::Acknowledged).is_err());
        assert!(m
            .recovered(state(&[("a", "2"), ("b", "2"), ("c", "2")]), Survive::Acknowledged)
            .is_ok());
    }

    #[test]
    fn a_power_loss_keeps_only_what_a_sync_covered() {
        let mut m = ShardModel::default();
        let a = m.send(vec![put("a", "1")]);
        m.reply(a, Outcome::Acked);
        m.synced(1);
        let b = m.send(vec![put("b", "1")]);
        m.reply(b, Outcome::Acked);
        assert!(m.recovered(state(&[("a", "1")]), Survive::Synced).is_ok());
        let c = m.send(vec![put("c", "1")]);
        m.reply(c, Outcome::Acked);
        assert!(m.recovered(state(&[("a", "1")]), Survive::Acknowledged).is_err());
    }

    #[test]
    fn reads_may_see_own_or_later_writes() {
        let mut m = ShardModel::default();
        let a = m.send(vec![put("k", "1")]);
        m.send(vec![WriteOp::Delete { key: b"k".to_vec() }]);
        let r = m.readable_after(a, b"k");
        assert_eq!(r, vec![Some(b"1".to_vec()), None]);
    }
}
