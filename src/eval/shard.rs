//! One shard of a run split across processes or machines (`--shard I/N`): which samples it
//! owns, decided by a hash of each sample's id alone, so every machine splits the same way
//! whatever the dataset order, and a sample's shard does not depend on the other samples. The
//! index may come from the scheduler instead of the command line: Kubernetes Indexed Jobs set
//! `JOB_COMPLETION_INDEX`, Slurm arrays `SLURM_ARRAY_TASK_ID`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Environment variables a scheduler sets to a task's 0-based index, in the order they are read.
pub const INDEX_VARIABLES: [&str; 2] = ["JOB_COMPLETION_INDEX", "SLURM_ARRAY_TASK_ID"];

/// Shard `index` of `count` (0-based).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShardError {
    #[error("invalid shard `{0}`; hint: write `I/N` with 0 <= I < N, e.g. `--shard 0/3`")]
    Syntax(String),
    #[error("shard index {index} is out of range for {count} shard(s); hint: indices run from 0 to {}", count.saturating_sub(1))]
    OutOfRange { index: u32, count: u32 },
    #[error(
        "`--shards {0}` needs the shard index from the scheduler, but neither `JOB_COMPLETION_INDEX` nor `SLURM_ARRAY_TASK_ID` is set; hint: pass `--shard I/{0}`"
    )]
    NoIndex(u32),
    #[error("`{variable}` is `{value}`, not a shard index; hint: it must be a whole number from 0 to {}", count.saturating_sub(1))]
    BadVariable {
        variable: &'static str,
        value: String,
        count: u32,
    },
}

impl Shard {
    pub fn new(index: u32, count: u32) -> Result<Shard, ShardError> {
        if count == 0 || index >= count {
            return Err(ShardError::OutOfRange { index, count });
        }
        Ok(Shard { index, count })
    }

    /// Shard `?/count` with the index the scheduler put in the environment (`lookup` reads a
    /// variable; the process environment in production).
    pub fn from_scheduler(count: u32, lookup: impl Fn(&str) -> Option<String>) -> Result<Shard, ShardError> {
        let Some((variable, value)) = INDEX_VARIABLES.iter().find_map(|v| lookup(v).map(|value| (*v, value))) else {
            return Err(ShardError::NoIndex(count));
        };
        let index = value.trim().parse::<u32>().map_err(|_| ShardError::BadVariable {
            variable,
            value: value.clone(),
            count,
        })?;
        match Shard::new(index, count) {
            Err(ShardError::OutOfRange { .. }) => Err(ShardError::BadVariable { variable, value, count }),
            other => other,
        }
    }

    /// The shard that owns a sample: the first 8 bytes of SHA-256 of its id, modulo the count.
    pub fn of(sample_id: &str, count: u32) -> u32 {
        let digest = Sha256::digest(sample_id.as_bytes());
        let mut head = [0u8; 8];
        head.copy_from_slice(&digest[..8]);
        (u64::from_be_bytes(head) % u64::from(count.max(1))) as u32
    }

    /// Whether this shard runs the sample with this id.
    pub fn owns(&self, sample_id: &str) -> bool {
        Shard::of(sample_id, self.count) == self.index
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl FromStr for Shard {
    type Err = ShardError;

    fn from_str(text: &str) -> Result<Shard, ShardError> {
        let syntax = || ShardError::Syntax(text.to_owned());
        let (index, count) = text.split_once('/').ok_or_else(syntax)?;
        let index = index.trim().parse().map_err(|_| syntax())?;
        let count = count.trim().parse().map_err(|_| syntax())?;
        Shard::new(index, count)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn parses_and_prints_index_over_count() {
        let shard: Shard = "2/3".parse().unwrap();
        assert_eq!(shard, Shard { index: 2, count: 3 });
        assert_eq!(shard.to_string(), "2/3");
        assert_eq!(
            "3/3".parse::<Shard>(),
            Err(ShardError::OutOfRange { index: 3, count: 3 })
        );
        assert_eq!(
            "0/0".parse::<Shard>(),
            Err(ShardError::OutOfRange { index: 0, count: 0 })
        );
        assert!(matches!("1".parse::<Shard>(), Err(ShardError::Syntax(_))));
        assert!(matches!("-1/3".parse::<Shard>(), Err(ShardError::Syntax(_))));
    }

    #[test]
    fn every_sample_belongs_to_exactly_one_shard_and_the_split_is_even() {
        let ids: Vec<String> = (0..3000).map(|i| format!("sample-{i}")).collect();
        let shards: Vec<Shard> = (0..3).map(|i| Shard::new(i, 3).unwrap()).collect();
        let mut sizes = [0usize; 3];
        for id in &ids {
            let owners: Vec<&Shard> = shards.iter().filter(|s| s.owns(id)).collect();
            assert_eq!(owners.len(), 1, "`{id}` belongs to {owners:?}");
            sizes[owners[0].index as usize] += 1;
        }
        for size in sizes {
            assert!((900..=1100).contains(&size), "uneven split {sizes:?}");
        }
    }

    #[test]
    fn the_split_is_fixed_by_the_id_alone() {
        // Pinned values (SHA-256 computed independently): changing the hash would move samples
        // between the shards of a job that is already running.
        let split: Vec<u32> = ["a", "b", "c", "0", "1"].iter().map(|id| Shard::of(id, 7)).collect();
        assert_eq!(split, [4, 0, 3, 3, 2]);
    }

    #[test]
    fn the_scheduler_index_comes_from_kubernetes_or_slurm() {
        let env = |pairs: &[(&str, &str)]| {
            let map: HashMap<String, String> = pairs.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect();
            move |k: &str| map.get(k).cloned()
        };
        assert_eq!(
            Shard::from_scheduler(4, env(&[("JOB_COMPLETION_INDEX", "3")])),
            Ok(Shard { index: 3, count: 4 })
        );
        assert_eq!(
            Shard::from_scheduler(4, env(&[("SLURM_ARRAY_TASK_ID", "1")])),
            Ok(Shard { index: 1, count: 4 })
        );
        assert_eq!(Shard::from_scheduler(4, env(&[])), Err(ShardError::NoIndex(4)));
        assert_eq!(
            Shard::from_scheduler(4, env(&[("SLURM_ARRAY_TASK_ID", "4")]))
                .unwrap_err()
                .to_string(),
            "`SLURM_ARRAY_TASK_ID` is `4`, not a shard index; hint: it must be a whole number from 0 to 3"
        );
    }
}
