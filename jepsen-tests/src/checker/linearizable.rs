//! Wing–Gong–Lowe linearizability search for one object under a sequential [`Model`]: the
//! register (one key: reads, writes and compare-and-set over unique values, [`check_register`])
//! and the catalog's instance record (`checker::catalog`) use the same search.
//!
//! The history is a doubly linked list of call and return events in time order. The search walks
//! it from the front: a call whose operation the model accepts in the current state is
//! linearized (its call and return are lifted out of the list and the step is pushed on a stack);
//! reaching a return whose operation was not linearized means the choices so far were wrong, so
//! the last one is undone. Lowe's cache of (linearized set, state) pairs prunes configurations
//! already explored. `info` operations never return: their return events sit after every real
//! event, so reaching one means every completed operation has been linearized and the rest may
//! simply never have happened.
//!
//! `todc-utils` implements the same search; this one is ours so it can use the register model
//! (value and the unobserved-write pruning below) directly and runs without extra dependencies.

use std::collections::HashSet;
use std::hash::Hash;

/// A sequential specification: the state an operation leaves, or `None` when the operation is
/// impossible in that state (a read of another value, a failed precondition).
pub trait Model {
    type State: Clone + Eq + Hash;
    type Op: Copy;
    fn step(state: &Self::State, op: &Self::Op) -> Option<Self::State>;
}

/// The register model: state `None` is "key absent".
pub struct Register;

impl Model for Register {
    type State = Option<u64>;
    type Op = RegisterOp;
    fn step(state: &Option<u64>, op: &RegisterOp) -> Option<Option<u64>> {
        step(*state, *op)
    }
}

/// A register operation as the model sees it. Values are unique per run; `None` is "key absent".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegisterOp {
    Read(Option<u64>),
    Write(u64),
    Cas { expected: u64, new: u64 },
}

/// One operation for the search: a call time and, unless it is `info`, a return time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timed<O> {
    pub op: O,
    pub call: u64,
    /// `None` for `info`: the operation may take effect at any time after its call, or never.
    pub ret: Option<u64>,
}

/// A timed register operation.
pub type TimedOp = Timed<RegisterOp>;

/// The outcome of a search.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Linearizability {
    Linearizable,
    /// No order explains the history; `stuck_at` is the operation (index into the input) whose
    /// return could never be reached with it linearized, in the deepest attempt.
    NotLinearizable {
        stuck_at: usize,
    },
    /// The search gave up after `budget` steps.
    Unknown,
}

fn step(state: Option<u64>, op: RegisterOp) -> Option<Option<u64>> {
    match op {
        RegisterOp::Read(value) => (value == state).then_some(state),
        RegisterOp::Write(value) => Some(Some(value)),
        RegisterOp::Cas { expected, new } => (state == Some(expected)).then_some(Some(new)),
    }
}

/// Drops `info` writes and cas whose value no completed operation ever observed: such an
/// operation can only overwrite the register with a value nobody reads, so leaving it out never
/// turns a linearizable history into a non-linearizable one, and it keeps the search small when a
/// partition turns many writes into `info`.
///
/// A kept `info` cas observes its expected value in turn (it can only take effect after a write
/// of it), so the observed set grows until nothing changes.
pub fn prune_unobserved(ops: &[TimedOp]) -> Vec<TimedOp> {
    let mut observed: HashSet<u64> = ops
        .iter()
        .filter(|op| op.ret.is_some())
        .filter_map(|op| match op.op {
            RegisterOp::Read(value) => value,
            RegisterOp::Cas { expected, .. } => Some(expected),
            RegisterOp::Write(_) => None,
        })
        .collect();
    loop {
        let before = observed.len();
        for op in ops.iter().filter(|op| op.ret.is_none()) {
            if let RegisterOp::Cas { expected, new } = op.op {
                if observed.contains(&new) {
                    observed.insert(expected);
                }
            }
        }
        if observed.len() == before {
            break;
        }
    }
    ops.iter()
        .copied()
        .filter(|op| match (op.ret, op.op) {
            (Some(_), _) => true,
            // A read that never returned constrains nothing.
            (None, RegisterOp::Read(_)) => false,
            (None, RegisterOp::Write(value)) | (None, RegisterOp::Cas { new: value, .. }) => {
                observed.contains(&value)
            }
        })
        .collect()
}

#[derive(Debug, Clone, Copy)]
struct Event {
    op: usize,
    is_call: bool,
    /// For a call, the index of its return event.
    matching: usize,
    prev: usize,
    next: usize,
}

const HEAD: usize = 0;
const NONE: usize = usize::MAX;

/// Checks one register's history (initially absent) with at most `budget` search steps.
pub fn check_register(ops: &[TimedOp], budget: u64) -> Linearizability {
    check_history::<Register>(ops, None, budget)
}

/// Checks one object's history under model `M`, starting from `initial`, with at most `budget`
/// search steps.
pub fn check_history<M: Model>(
    ops: &[Timed<M::Op>],
    initial: M::State,
    budget: u64,
) -> Linearizability {
    // Events in time order. At equal times calls sort before returns, so the two operations count
    // as concurrent: the permissive reading, which can never invent an anomaly. (History times
    // are taken under one lock, so ties do not happen in recorded runs.)
    let mut order: Vec<(u64, bool, usize)> = Vec::with_capacity(ops.len() * 2);
    for (index, op) in ops.iter().enumerate() {
        order.push((op.call, true, index));
        order.push((op.ret.unwrap_or(u64::MAX), false, index));
    }
    // (time, is_return, op): calls (false) sort before returns at equal times.
    order.sort_by_key(|&(time, is_call, index)| (time, !is_call, index));

    // Node 0 is the list head; events are 1..=2n.
    let mut events = vec![Event {
        op: NONE,
        is_call: false,
        matching: NONE,
        prev: NONE,
        next: NONE,
    }];
    let mut call_event = vec![NONE; ops.len()];
    let mut return_event = vec![NONE; ops.len()];
    for &(_, is_call, index) in &order {
        let id = events.len();
        events.push(Event {
            op: index,
            is_call,
            matching: NONE,
            prev: id - 1,
            next: NONE,
        });
        events[id - 1].next = id;
        if is_call {
            call_event[index] = id;
        } else {
            return_event[index] = id;
        }
    }
    for index in 0..ops.len() {
        events[call_event[index]].matching = return_event[index];
    }

    let lift = |events: &mut Vec<Event>, call: usize| {
        for id in [call, events[call].matching] {
            let (prev, next) = (events[id].prev, events[id].next);
            events[prev].next = next;
            if next != NONE {
                events[next].prev = prev;
            }
        }
    };
    let unlift = |events: &mut Vec<Event>, call: usize| {
        for id in [events[call].matching, call] {
            let (prev, next) = (events[id].prev, events[id].next);
            events[prev].next = id;
            if next != NONE {
                events[next].prev = id;
            }
        }
    };

    let words = ops.len().div_ceil(64).max(1);
    let mut linearized = vec![0u64; words];
    let mut cache: HashSet<(Vec<u64>, M::State)> = HashSet::new();
    let mut stack: Vec<(usize, M::State)> = Vec::new();
    let mut state: M::State = initial;
    let mut entry = events[HEAD].next;
    let mut steps = 0u64;
    let mut deepest = (0usize, 0usize);

    while entry != NONE {
        steps += 1;
        if steps > budget {
            return Linearizability::Unknown;
        }
        let event = events[entry];
        let op = &ops[event.op];
        if event.is_call {
            if let Some(next_state) = M::step(&state, &op.op) {
                let mut next_linearized = linearized.clone();
                next_linearized[event.op / 64] |= 1 << (event.op % 64);
                if cache.insert((next_linearized.clone(), next_state.clone())) {
                    let previous = std::mem::replace(&mut state, next_state);
                    stack.push((entry, previous));
                    linearized = next_linearized;
                    lift(&mut events, entry);
                    entry = events[HEAD].next;
                    continue;
                }
            }
            entry = event.next;
        } else {
            if op.ret.is_none() {
                // Every completed op is linearized; the remaining info ops never happened.
                return Linearizability::Linearizable;
            }
            if stack.len() >= deepest.0 {
                deepest = (stack.len(), event.op);
            }
            let Some((call, previous_state)) = stack.pop() else {
                return Linearizability::NotLinearizable {
                    stuck_at: deepest.1,
                };
            };
            state = previous_state;
            let op_index = events[call].op;
            linearized[op_index / 64] &= !(1 << (op_index % 64));
            unlift(&mut events, call);
            entry = events[call].next;
        }
    }
    Linearizability::Linearizable
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(op: RegisterOp, call: u64, ret: Option<u64>) -> TimedOp {
        TimedOp { op, call, ret }
    }

    #[test]
    fn sequential_history_is_linearizable() {
        let ops = [
            op(RegisterOp::Read(None), 0, Some(1)),
            op(RegisterOp::Write(1), 2, Some(3)),
            op(RegisterOp::Read(Some(1)), 4, Some(5)),
            op(
                RegisterOp::Cas {
                    expected: 1,
                    new: 2,
                },
                6,
                Some(7),
            ),
            op(RegisterOp::Read(Some(2)), 8, Some(9)),
        ];
        assert_eq!(check_register(&ops, 1_000), Linearizability::Linearizable);
    }

    #[test]
    fn concurrent_reads_may_see_either_value() {
        let ops = [
            op(RegisterOp::Write(1), 0, Some(1)),
            op(RegisterOp::Write(2), 2, Some(10)),
            op(RegisterOp::Read(Some(2)), 3, Some(4)),
            op(RegisterOp::Read(Some(1)), 3, Some(5)),
        ];
        // Read 2 finished before read 1 started? No: both overlap the write, but read(2) then
        // read(1) would need the register to go back. They overlap each other, so read(1) can be
        // ordered first.
        assert_eq!(check_register(&ops, 1_000), Linearizability::Linearizable);
    }

    /// Negative control: a read that returns a value overwritten before it started.
    #[test]
    fn stale_read_is_rejected() {
        let ops = [
            op(RegisterOp::Write(1), 0, Some(1)),
            op(RegisterOp::Write(2), 2, Some(3)),
            op(RegisterOp::Read(Some(1)), 4, Some(5)),
        ];
        assert!(matches!(
            check_register(&ops, 1_000),
            Linearizability::NotLinearizable { .. }
        ));
    }

    /// Negative control: an acknowledged write that later reads never see (lost write).
    #[test]
    fn lost_write_is_rejected() {
        let ops = [
            op(RegisterOp::Write(1), 0, Some(1)),
            op(RegisterOp::Write(2), 2, Some(3)),
            op(RegisterOp::Read(Some(2)), 4, Some(5)),
            op(RegisterOp::Read(None), 6, Some(7)),
        ];
        assert!(matches!(
            check_register(&ops, 1_000),
            Linearizability::NotLinearizable { .. }
        ));
    }

    #[test]
    fn info_write_may_take_effect_late_or_never() {
        let ops = [
            op(RegisterOp::Write(1), 0, None),
            op(RegisterOp::Read(None), 1, Some(2)),
            op(RegisterOp::Read(Some(1)), 10, Some(11)),
        ];
        assert_eq!(check_register(&ops, 1_000), Linearizability::Linearizable);
        let never = [
            op(RegisterOp::Write(1), 0, None),
            op(RegisterOp::Read(None), 1, Some(2)),
        ];
        assert_eq!(check_register(&never, 1_000), Linearizability::Linearizable);
    }

    #[test]
    fn info_write_cannot_take_effect_before_its_call() {
        let ops = [
            op(RegisterOp::Read(Some(1)), 0, Some(1)),
            op(RegisterOp::Write(1), 5, None),
        ];
        assert!(matches!(
            check_register(&ops, 1_000),
            Linearizability::NotLinearizable { .. }
        ));
    }

    #[test]
    fn cas_that_succeeded_against_a_value_never_present_is_rejected() {
        let ops = [
            op(RegisterOp::Write(1), 0, Some(1)),
            op(
                RegisterOp::Cas {
                    expected: 7,
                    new: 2,
                },
                2,
                Some(3),
            ),
        ];
        assert!(matches!(
            check_register(&ops, 1_000),
            Linearizability::NotLinearizable { .. }
        ));
    }

    #[test]
    fn unobserved_info_writes_are_pruned_and_observed_ones_kept() {
        let ops = [
            op(RegisterOp::Write(1), 0, None),
            op(RegisterOp::Write(2), 0, None),
            op(RegisterOp::Read(Some(2)), 5, Some(6)),
        ];
        let pruned = prune_unobserved(&ops);
        assert_eq!(pruned.len(), 2);
        assert!(pruned.iter().all(|op| op.op != RegisterOp::Write(1)));
    }

    /// An info write read only through an info cas that started from it must stay: dropping it
    /// would leave the cas without its expected value and invent an anomaly.
    #[test]
    fn info_write_observed_through_an_info_cas_is_kept() {
        let ops = [
            op(RegisterOp::Write(1), 0, None),
            op(
                RegisterOp::Cas {
                    expected: 1,
                    new: 2,
                },
                1,
                None,
            ),
            op(RegisterOp::Read(Some(2)), 5, Some(6)),
        ];
        let pruned = prune_unobserved(&ops);
        assert_eq!(pruned.len(), 3);
        assert_eq!(
            check_register(&pruned, 1_000),
            Linearizability::Linearizable
        );
    }

    #[test]
    fn budget_exhaustion_is_unknown_not_valid() {
        let ops: Vec<TimedOp> = (0..20)
            .map(|value| op(RegisterOp::Write(value), 0, Some(100)))
            .chain([op(RegisterOp::Read(Some(99)), 200, Some(201))])
            .collect();
        assert_eq!(check_register(&ops, 50), Linearizability::Unknown);
    }
}
