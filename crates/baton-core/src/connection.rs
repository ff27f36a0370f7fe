//! The settings every Baton binary shares: where Redis and Postgres are, and the names Baton uses
//! in them. One definition, flattened into `baton` and `baton-worker` alike.

/// The Postgres schema the ledger lives in unless `BATON_DB_SCHEMA` names another.
pub const DEFAULT_DB_SCHEMA: &str = "baton";

/// Where Redis and Postgres are, and the stream, group and schema Baton uses in them.
#[derive(Debug, Clone, clap::Args)]
pub struct Connection {
    /// Redis holding the job stream, its dead letters and events, and the checkpoints.
    #[arg(
        long,
        global = true,
        env = "REDIS_URL",
        hide_env_values = true,
        default_value = "redis://127.0.0.1:6379"
    )]
    pub redis_url: String,

    /// Postgres holding the ledger.
    #[arg(
        long,
        global = true,
        env = "DATABASE_URL",
        hide_env_values = true,
        default_value = "postgres://postgres@127.0.0.1:5432/baton?sslmode=disable"
    )]
    pub database_url: String,

    /// The Postgres schema holding the ledger's tables and functions, so that it can share the
    /// application's database.
    #[arg(long = "db-schema", global = true, env = "BATON_DB_SCHEMA", default_value = DEFAULT_DB_SCHEMA)]
    pub db_schema: String,

    /// The job stream.
    #[arg(long, global = true, env = "BATON_STREAM", default_value = crate::DEFAULT_STREAM)]
    pub stream: String,

    /// The consumer group every worker replica joins.
    #[arg(long, global = true, env = "BATON_GROUP", default_value = crate::DEFAULT_GROUP)]
    pub group: String,
}
