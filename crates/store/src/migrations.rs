//! The schema history, embedded at compile time: one list of steps, each with its SQLite and its
//! PostgreSQL text (`migrations/{sqlite,postgres}/NNNN_name.sql`). Both backends always have the
//! same versions; only the dialect differs. sqlx's migrator records what ran in
//! `_sqlx_migrations`, so running again is a no-op and an edited past migration is refused.

use std::borrow::Cow;

use sqlx::SqlSafeStr;
use sqlx::migrate::{Migration, MigrationType, Migrator};

use crate::Backend;

struct Step {
    version: i64,
    description: &'static str,
    sqlite: &'static str,
    postgres: &'static str,
}

const STEPS: &[Step] = &[
    Step {
        version: 1,
        description: "config",
        sqlite: include_str!("../migrations/sqlite/0001_config.sql"),
        postgres: include_str!("../migrations/postgres/0001_config.sql"),
    },
    Step {
        version: 2,
        description: "access",
        sqlite: include_str!("../migrations/sqlite/0002_access.sql"),
        postgres: include_str!("../migrations/postgres/0002_access.sql"),
    },
    Step {
        version: 3,
        description: "billing",
        sqlite: include_str!("../migrations/sqlite/0003_billing.sql"),
        postgres: include_str!("../migrations/postgres/0003_billing.sql"),
    },
    Step {
        version: 4,
        description: "events",
        sqlite: include_str!("../migrations/sqlite/0004_events.sql"),
        postgres: include_str!("../migrations/postgres/0004_events.sql"),
    },
    Step {
        version: 5,
        description: "functions",
        sqlite: include_str!("../migrations/sqlite/0005_functions.sql"),
        postgres: include_str!("../migrations/postgres/0005_functions.sql"),
    },
    Step {
        version: 6,
        description: "request_log",
        sqlite: include_str!("../migrations/sqlite/0006_request_log.sql"),
        postgres: include_str!("../migrations/postgres/0006_request_log.sql"),
    },
    Step {
        version: 7,
        description: "consumer_limits",
        sqlite: include_str!("../migrations/sqlite/0007_consumer_limits.sql"),
        postgres: include_str!("../migrations/postgres/0007_consumer_limits.sql"),
    },
    Step {
        version: 8,
        description: "rollups_per_question",
        sqlite: include_str!("../migrations/sqlite/0008_rollups_per_question.sql"),
        postgres: include_str!("../migrations/postgres/0008_rollups_per_question.sql"),
    },
    Step {
        version: 9,
        description: "knowledge",
        sqlite: include_str!("../migrations/sqlite/0009_knowledge.sql"),
        postgres: include_str!("../migrations/postgres/0009_knowledge.sql"),
    },
    Step {
        version: 10,
        description: "lighter_holds",
        sqlite: include_str!("../migrations/sqlite/0010_lighter_holds.sql"),
        postgres: include_str!("../migrations/postgres/0010_lighter_holds.sql"),
    },
];

/// The migrator for `backend`, with every step in version order.
pub(crate) fn migrator(backend: Backend) -> Migrator {
    let migrations = STEPS
        .iter()
        .map(|step| {
            let sql = match backend {
                Backend::Sqlite => step.sqlite,
                Backend::Postgres => step.postgres,
            };
            Migration::new(
                step.version,
                Cow::Borrowed(step.description),
                MigrationType::Simple,
                sql.into_sql_str(),
                false,
            )
        })
        .collect();
    Migrator::with_migrations(migrations)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    /// Every file under `migrations/<dir>` is listed in `STEPS` under its own version, so a new
    /// file cannot be forgotten for one backend.
    #[test]
    fn every_migration_file_is_listed_for_both_backends() -> Result<(), std::io::Error> {
        let listed: BTreeSet<String> = STEPS
            .iter()
            .map(|s| format!("{:04}_{}.sql", s.version, s.description))
            .collect();
        for dir in ["sqlite", "postgres"] {
            let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("migrations")
                .join(dir);
            let mut files = BTreeSet::new();
            for entry in std::fs::read_dir(path)? {
                files.insert(entry?.file_name().to_string_lossy().into_owned());
            }
            assert_eq!(files, listed, "migrations/{dir} and STEPS disagree");
        }
        let versions: Vec<i64> = STEPS.iter().map(|s| s.version).collect();
        assert!(versions.windows(2).all(|w| w[0] < w[1]), "versions ascend");
        Ok(())
    }
}
