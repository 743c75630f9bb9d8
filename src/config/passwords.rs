//! `[passwords]`: Argon2id parameters, the hashing pool and the password policy.

use serde::{Deserialize, Serialize};

use super::check_range;
use crate::core::passwords::HashingSettings;

/// `[passwords]` as written.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawPasswords {
    /// Argon2id memory, KiB.
    pub memory_kib: u32,
    /// Argon2id iterations.
    pub iterations: u32,
    /// Argon2id lanes.
    pub parallelism: u32,
    /// Hashing threads; 0 means one per core.
    pub threads: usize,
    /// Queue length; 0 means 64 per thread.
    pub queue: usize,
    /// Refuse new passwords that are common or easy to guess.
    pub refuse_common: bool,
}

impl Default for RawPasswords {
    fn default() -> Self {
        let d = HashingSettings::default();
        Self {
            memory_kib: d.memory_kib,
            iterations: d.iterations,
            parallelism: d.parallelism,
            threads: 0,
            queue: 0,
            refuse_common: true,
        }
    }
}

impl RawPasswords {
    /// Checks the section, recording each problem, and builds the hashing
    /// settings (`refuse_common` goes to the abuse settings instead).
    pub(super) fn validate(&self, problems: &mut Vec<String>) -> HashingSettings {
        let cores = std::thread::available_parallelism()
            .map(usize::from)
            .unwrap_or(2);
        let threads = if self.threads == 0 {
            cores
        } else {
            check_range(problems, "passwords.threads", self.threads, 1, 256)
        };
        // Hashes Sesame makes must stay within what it verifies from a
        // stored hash (core::passwords::check_stored_cost).
        let work = u64::from(self.memory_kib) * u64::from(self.iterations);
        if work > crate::core::passwords::MAX_STORED_WORK_KIB {
            problems.push(format!(
                "passwords.memory_kib × passwords.iterations must be at most {} (it is {work})",
                crate::core::passwords::MAX_STORED_WORK_KIB
            ));
        }
        HashingSettings {
            memory_kib: check_range(
                problems,
                "passwords.memory_kib",
                self.memory_kib,
                // Checked below; clamped here so that no value overflows.
                8 * self.parallelism.clamp(1, 64),
                1024 * 1024,
            ),
            iterations: check_range(problems, "passwords.iterations", self.iterations, 1, 64),
            parallelism: check_range(problems, "passwords.parallelism", self.parallelism, 1, 64),
            threads,
            queue: if self.queue == 0 {
                64 * threads
            } else {
                check_range(problems, "passwords.queue", self.queue, 1, 100_000)
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::RawConfig;

    /// A parallelism far out of range is reported, not an overflow of the
    /// memory bound computed from it.
    #[test]
    fn a_huge_parallelism_is_a_problem_not_a_panic() {
        let mut raw = RawConfig::default();
        raw.passwords.parallelism = 600_000_000;
        let error = raw.validate().unwrap_err().to_string();
        assert!(error.contains("passwords.parallelism"), "{error}");
        assert!(!error.contains("505032704"), "{error}");
    }
}
