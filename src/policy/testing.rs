//! `policy test`: the expectations written next to the rules, run against the compiled policy.
//!
//! Tests run against the whole policy that was loaded, not against their own file only, because that
//! is what the server will enforce: a deny rule in another file must be able to break a test.

use std::fmt;

use serde::{Serialize, Serializer};

use super::explain::Explanation;
use crate::identity::RequestContext;
use crate::scope::{Action, Scope};

/// One compiled test case.
#[derive(Debug, Clone)]
pub(crate) struct TestCase {
    pub file: String,
    pub name: String,
    pub ctx: RequestContext,
    pub scope: Scope,
    /// Sorted and deduplicated.
    pub expect: Vec<Action>,
}

/// The result of one test case.
#[derive(Debug, Clone, Serialize)]
pub struct TestOutcome {
    pub file: String,
    pub name: String,
    pub scope: String,
    /// Sorted (pull, push, delete, *).
    #[serde(serialize_with = "actions_as_strings")]
    pub expected: Vec<Action>,
    /// Sorted (pull, push, delete, *).
    #[serde(serialize_with = "actions_as_strings")]
    pub got: Vec<Action>,
    pub passed: bool,
    /// Present for failed cases only.
    pub explanation: Option<Explanation>,
}

/// The results of every test case, in file order.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TestReport {
    pub outcomes: Vec<TestOutcome>,
}

impl TestReport {
    pub fn passed(&self) -> usize {
        self.outcomes.iter().filter(|o| o.passed).count()
    }

    pub fn failed(&self) -> usize {
        self.outcomes.len() - self.passed()
    }

    pub fn failures(&self) -> impl Iterator<Item = &TestOutcome> {
        self.outcomes.iter().filter(|o| !o.passed)
    }
}

fn actions_as_strings<S: Serializer>(actions: &[Action], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(actions.iter().map(|a| a.as_str()))
}

fn list(actions: &[Action]) -> String {
    let parts: Vec<&str> = actions.iter().map(|a| a.as_str()).collect();
    format!("[{}]", parts.join(", "))
}

impl fmt::Display for TestReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for o in self.failures() {
            writeln!(f, "FAIL {}: test {:?}", o.file, o.name)?;
            writeln!(f, "  scope:    {}", o.scope)?;
            writeln!(f, "  expected: {}", list(&o.expected))?;
            writeln!(f, "  got:      {}", list(&o.got))?;
            if let Some(explanation) = &o.explanation {
                for line in explanation.to_string().lines() {
                    if line.is_empty() {
                        writeln!(f)?;
                    } else {
                        writeln!(f, "    {line}")?;
                    }
                }
            }
            writeln!(f)?;
        }
        write!(f, "{} passed, {} failed", self.passed(), self.failed())
    }
}
