//! What kmemlabd does on each press: a plan is a cycle of allocation steps. A press
//! allocates the current step, the next press frees it and the one after allocates the
//! next step, around again.
//!
//! Syntax (`kmemlabd --plan`): steps separated by `,`, each `KIND[:SIZE[:FLAG|FLAG]]`.
//! A kind alone is its seed step ([`Step::seed`]); a size without flags is `GFP_KERNEL`;
//! flags without a base flag get `GFP_KERNEL`. `seed` or `default` is [`DEFAULT_PLAN`].
//!
//! ```text
//! vmalloc                                  vmalloc 1 byte, GFP_KERNEL
//! kmalloc:64:GFP_KERNEL|__GFP_ZERO,pages:16K
//! kmalloc:1:GFP_ATOMIC,vmalloc:1,dma_coherent:1024:GFP_ATOMIC   (the default)
//! ```

use std::fmt;

use kmemlab::device::Device;
use kmemlab::error::{Error, Result};
use kmemlab::spec::{format_size, parse_size, Flags, Kind};
use kmemlab::uapi::{Alloc, Free};

/// The seed module's cycle, replayed by default: kmalloc of 1 byte with GFP_ATOMIC,
/// vmalloc of 1 byte, dma_alloc_coherent of 1024 bytes with GFP_ATOMIC (the seed called
/// it with GFP_ATOMIC; the module accepts it and serves it from the atomic pool).
/// Change the cycle here.
pub const DEFAULT_PLAN: &str =
    "kmalloc:1:GFP_ATOMIC,vmalloc:1:GFP_KERNEL,dma_coherent:1024:GFP_ATOMIC";

/// One allocation of a plan.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Step {
    /// The kind.
    pub kind: Kind,
    /// Bytes.
    pub size: u64,
    /// Gfp flags (never `PERSIST`: the daemon's allocations belong to its open file, so
    /// a crashed daemon leaks nothing).
    pub flags: Flags,
}

impl Step {
    /// The step a kind alone stands for: the seed's size and flags for kmalloc (1 byte,
    /// GFP_ATOMIC), vmalloc (1 byte) and dma_coherent (1024 bytes, GFP_ATOMIC); 1 byte
    /// of kvmalloc and one page (4K) of pages, with GFP_KERNEL.
    pub fn seed(kind: Kind) -> Step {
        let (size, flags) = match kind {
            Kind::Kmalloc => (1, Flags::GFP_ATOMIC),
            Kind::Vmalloc => (1, Flags::GFP_KERNEL),
            Kind::DmaCoherent => (1024, Flags::GFP_ATOMIC),
            Kind::Kvmalloc => (1, Flags::GFP_KERNEL),
            Kind::Pages => (4096, Flags::GFP_KERNEL),
        };
        Step { kind, size, flags }
    }

    /// Parses `KIND[:SIZE[:FLAG|FLAG]]`.
    pub fn parse(s: &str) -> Result<Step> {
        let mut parts = s.trim().splitn(3, ':');
        let kind = Kind::parse(parts.next().unwrap_or(""))?;
        let Some(size) = parts.next() else {
            return Ok(Step::seed(kind));
        };
        let size = parse_size(size)?;
        let flags = match parts.next() {
            Some(flags) => Flags::parse_gfp(flags)?,
            None => Flags::GFP_KERNEL,
        };
        Ok(Step { kind, size, flags })
    }
}

impl fmt::Display for Step {
    /// `kind:size:FLAGS`, which [`Step::parse`] reads back.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}",
            self.kind,
            format_size(self.size),
            self.flags.gfp_string()
        )
    }
}

/// A non-empty cycle of steps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    steps: Vec<Step>,
}

impl Plan {
    /// Parses a plan (see the module documentation).
    pub fn parse(s: &str) -> Result<Plan> {
        let t = s.trim();
        if t.eq_ignore_ascii_case("seed") || t.eq_ignore_ascii_case("default") {
            return Ok(Plan::default());
        }
        if t.is_empty() {
            return Err(Error::Invalid {
                what: "plan",
                input: s.to_owned(),
                reason: "no steps (e.g. vmalloc, or kmalloc:64,vmalloc:4K)".into(),
            });
        }
        let steps = t
            .split(',')
            .enumerate()
            .map(|(i, step)| {
                if step.trim().is_empty() {
                    return Err(Error::PlanStep {
                        index: i + 1,
                        step: step.to_owned(),
                        source: Box::new(Error::Invalid {
                            what: "step",
                            input: step.to_owned(),
                            reason: "empty".into(),
                        }),
                    });
                }
                Step::parse(step).map_err(|e| Error::PlanStep {
                    index: i + 1,
                    step: step.trim().to_owned(),
                    source: Box::new(e),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Plan { steps })
    }

    /// The steps, in order.
    pub fn steps(&self) -> &[Step] {
        &self.steps
    }
}

impl Default for Plan {
    /// [`DEFAULT_PLAN`].
    fn default() -> Self {
        Plan::parse(DEFAULT_PLAN).expect("DEFAULT_PLAN parses")
    }
}

impl fmt::Display for Plan {
    /// The steps joined by `,`, which [`Plan::parse`] reads back.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, step) in self.steps.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{step}")?;
        }
        Ok(())
    }
}

/// An allocation the daemon holds, waiting for the press that frees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Held {
    /// The step it was made for.
    pub step: Step,
    /// The module's report.
    pub alloc: Alloc,
}

/// What one press did.
#[derive(Debug)]
pub enum Outcome {
    /// The step was allocated and is now held.
    Allocated {
        /// The step.
        step: Step,
        /// The module's report.
        alloc: Alloc,
    },
    /// The held allocation was freed.
    Freed {
        /// What was freed.
        held: Held,
        /// The module's report.
        free: Free,
    },
    /// Allocating the step failed; the next press goes on to the next step.
    AllocFailed {
        /// The step.
        step: Step,
        /// Why.
        error: Error,
    },
    /// Freeing failed; the daemon forgets the allocation (the module frees it with the
    /// daemon's file at the latest) and the next press goes on to the next step.
    FreeFailed {
        /// What it tried to free.
        held: Held,
        /// Why.
        error: Error,
    },
}

/// Runs a plan press by press: the step machine.
#[derive(Clone, Debug)]
pub struct PlanRunner {
    plan: Plan,
    next: usize,
    held: Option<Held>,
}

impl PlanRunner {
    /// At the first step, holding nothing.
    pub fn new(plan: Plan) -> Self {
        Self {
            plan,
            next: 0,
            held: None,
        }
    }

    /// The plan.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// What the daemon holds now.
    pub fn held(&self) -> Option<&Held> {
        self.held.as_ref()
    }

    /// The step the next allocating press runs.
    pub fn next_step(&self) -> Step {
        self.plan.steps[self.next]
    }

    /// One press: frees what is held, or else allocates the current step.
    pub fn press<D: Device + ?Sized>(&mut self, dev: &D) -> Outcome {
        if let Some(held) = self.held.take() {
            self.advance();
            return match dev.free(held.alloc.handle) {
                Ok(free) => Outcome::Freed { held, free },
                Err(error) => Outcome::FreeFailed { held, error },
            };
        }
        let step = self.next_step();
        match dev.alloc(step.kind, step.size, step.flags) {
            Ok(alloc) => {
                self.held = Some(Held { step, alloc });
                Outcome::Allocated { step, alloc }
            }
            Err(error) => {
                self.advance();
                Outcome::AllocFailed { step, error }
            }
        }
    }

    /// Frees what is held, if anything (at shutdown).
    pub fn release<D: Device + ?Sized>(&mut self, dev: &D) -> Option<Outcome> {
        let held = self.held.take()?;
        self.advance();
        Some(match dev.free(held.alloc.handle) {
            Ok(free) => Outcome::Freed { held, free },
            Err(error) => Outcome::FreeFailed { held, error },
        })
    }

    fn advance(&mut self) {
        self.next = (self.next + 1) % self.plan.steps.len();
    }
}

#[cfg(test)]
mod tests {
    use nix::errno::Errno;

    use super::*;
    use kmemlab::MockDevice;

    #[test]
    fn default_plan_is_the_seed() {
        let p = Plan::default();
        assert_eq!(
            p.steps(),
            [
                Step {
                    kind: Kind::Kmalloc,
                    size: 1,
                    flags: Flags::GFP_ATOMIC
                },
                Step {
                    kind: Kind::Vmalloc,
                    size: 1,
                    flags: Flags::GFP_KERNEL
                },
                Step {
                    kind: Kind::DmaCoherent,
                    size: 1024,
                    flags: Flags::GFP_ATOMIC
                },
            ]
        );
        assert_eq!(Plan::parse("seed").unwrap(), p);
        assert_eq!(Plan::parse(" DEFAULT ").unwrap(), p);
        assert_eq!(
            p.to_string(),
            "kmalloc:1:GFP_ATOMIC,vmalloc:1:GFP_KERNEL,dma_coherent:1K:GFP_ATOMIC"
        );
    }

    #[test]
    fn one_kind_is_its_seed_step() {
        for (s, size, flags) in [
            ("vmalloc", 1, Flags::GFP_KERNEL),
            ("kmalloc", 1, Flags::GFP_ATOMIC),
            ("dma-coherent", 1024, Flags::GFP_ATOMIC),
            ("kvmalloc", 1, Flags::GFP_KERNEL),
            ("pages", 4096, Flags::GFP_KERNEL),
        ] {
            let p = Plan::parse(s).unwrap();
            assert_eq!(p.steps().len(), 1);
            assert_eq!(p.steps()[0].size, size, "{s}");
            assert_eq!(p.steps()[0].flags, flags, "{s}");
        }
    }

    #[test]
    fn custom_cycles() {
        let p = Plan::parse("kmalloc:64:GFP_KERNEL|__GFP_ZERO,pages:16K").unwrap();
        assert_eq!(
            p.steps(),
            [
                Step {
                    kind: Kind::Kmalloc,
                    size: 64,
                    flags: Flags::parse_gfp("GFP_KERNEL|__GFP_ZERO").unwrap()
                },
                Step {
                    kind: Kind::Pages,
                    size: 16 << 10,
                    flags: Flags::GFP_KERNEL
                },
            ]
        );
        assert_eq!(
            p.to_string(),
            "kmalloc:64:GFP_KERNEL|__GFP_ZERO,pages:16K:GFP_KERNEL"
        );
        assert_eq!(Plan::parse(&p.to_string()).unwrap(), p);
        // Mixed: a kind alone, spaces, lower-case short flags.
        let p = Plan::parse(" vmalloc , kvmalloc:2M:zero|noretry ").unwrap();
        assert_eq!(p.steps()[0], Step::seed(Kind::Vmalloc));
        assert_eq!(
            p.steps()[1].flags.gfp_names(),
            ["GFP_KERNEL", "__GFP_ZERO", "__GFP_NORETRY"]
        );
    }

    #[test]
    fn plan_errors_name_the_step() {
        for (s, want) in [
            ("", "invalid plan \"\": no steps"),
            (
                "slab",
                "invalid plan step 1 \"slab\": invalid kind \"slab\"",
            ),
            (
                "kmalloc,vmalloc:0",
                "invalid plan step 2 \"vmalloc:0\": invalid size \"0\": must be at least 1 byte",
            ),
            (
                "kmalloc:1:GFP_FOO",
                "invalid plan step 1 \"kmalloc:1:GFP_FOO\": invalid gfp flag \"GFP_FOO\"",
            ),
            (
                "kmalloc:1:GFP_KERNEL:x",
                "invalid plan step 1 \"kmalloc:1:GFP_KERNEL:x\": invalid gfp flag \"GFP_KERNEL:x\"",
            ),
            (
                "kmalloc,,vmalloc",
                "invalid plan step 2 \"\": invalid step \"\": empty",
            ),
            ("kmalloc,", "invalid plan step 2"),
            (
                "kmalloc:",
                "invalid plan step 1 \"kmalloc:\": invalid size \"\"",
            ),
            (
                "kmalloc:1:GFP_KERNEL,GFP_ZERO",
                "invalid plan step 2 \"GFP_ZERO\": invalid kind",
            ),
            ("kmalloc:1:GFP_ATOMIC|GFP_KERNEL", "exclude each other"),
        ] {
            let err = Plan::parse(s).unwrap_err();
            assert_eq!(err.errno_name(), "EINVAL");
            assert!(err.report().contains(want), "{s:?}: {}", err.report());
        }
    }

    fn kinds_of(calls: &[String]) -> Vec<&str> {
        calls.iter().map(String::as_str).collect()
    }

    #[test]
    fn press_allocates_then_frees_then_moves_on_around() {
        let dev = MockDevice::new();
        let mut r = PlanRunner::new(Plan::default());
        let mut seen = Vec::new();
        for _ in 0..8 {
            seen.push(match r.press(&dev) {
                Outcome::Allocated { step, alloc } => {
                    assert_eq!(alloc.size, step.size);
                    format!("alloc {} {}", step.kind, alloc.handle)
                }
                Outcome::Freed { held, free } => {
                    assert_eq!(free.handle, held.alloc.handle);
                    format!("free {} {}", held.step.kind, free.handle)
                }
                other => panic!("{other:?}"),
            });
        }
        assert_eq!(
            seen,
            [
                "alloc kmalloc 1",
                "free kmalloc 1",
                "alloc vmalloc 2",
                "free vmalloc 2",
                "alloc dma_coherent 3",
                "free dma_coherent 3",
                "alloc kmalloc 4",
                "free kmalloc 4",
            ]
        );
        assert!(dev.live().is_empty());
        assert!(r.held().is_none());
        assert_eq!(r.next_step().kind, Kind::Vmalloc);
    }

    #[test]
    fn a_failed_alloc_moves_to_the_next_step() {
        let dev = MockDevice::new();
        let mut r = PlanRunner::new(Plan::default());
        dev.fail_next(Errno::ENOMEM);
        match r.press(&dev) {
            Outcome::AllocFailed { step, error } => {
                assert_eq!(step.kind, Kind::Kmalloc);
                assert_eq!(error.errno_name(), "ENOMEM");
            }
            other => panic!("{other:?}"),
        }
        assert!(r.held().is_none());
        assert!(matches!(
            r.press(&dev),
            Outcome::Allocated {
                step: Step {
                    kind: Kind::Vmalloc,
                    ..
                },
                ..
            }
        ));
        assert!(matches!(r.press(&dev), Outcome::Freed { .. }));
        assert_eq!(
            kinds_of(&dev.calls()),
            ["alloc kmalloc 1", "alloc vmalloc 1", "free 1"]
        );
    }

    #[test]
    fn a_failed_free_forgets_and_moves_on() {
        let dev = MockDevice::new();
        let mut r = PlanRunner::new(Plan::parse("kmalloc:8,vmalloc:8").unwrap());
        assert!(matches!(r.press(&dev), Outcome::Allocated { .. }));
        dev.fail_next(Errno::EINTR);
        match r.press(&dev) {
            Outcome::FreeFailed { held, error } => {
                assert_eq!(held.alloc.handle, 1);
                assert_eq!(error.errno_name(), "EINTR");
            }
            other => panic!("{other:?}"),
        }
        assert!(r.held().is_none());
        match r.press(&dev) {
            Outcome::Allocated { step, .. } => assert_eq!(step.kind, Kind::Vmalloc),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_single_step_plan_cycles_on_itself() {
        let dev = MockDevice::new();
        let mut r = PlanRunner::new(Plan::parse("pages:16K").unwrap());
        for press in 0..6 {
            let out = r.press(&dev);
            if press % 2 == 0 {
                assert!(matches!(out, Outcome::Allocated { .. }), "{out:?}");
            } else {
                assert!(matches!(out, Outcome::Freed { .. }), "{out:?}");
            }
        }
        assert_eq!(dev.live().len(), 0);
        assert_eq!(dev.stats().unwrap().kinds[4].allocs, 3);
    }

    #[test]
    fn release_frees_what_is_held() {
        let dev = MockDevice::new();
        let mut r = PlanRunner::new(Plan::default());
        assert!(r.release(&dev).is_none());
        r.press(&dev);
        assert_eq!(dev.live().len(), 1);
        assert!(matches!(r.release(&dev), Some(Outcome::Freed { .. })));
        assert!(dev.live().is_empty());
        assert!(r.release(&dev).is_none());
    }
}
