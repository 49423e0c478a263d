//! `put`, `get`, `del`, `compact`: flags map onto the client's option structs, which own the
//! mapping to wire requests (shared with `txn`).

use beacon_client::{Client, DeleteOptions, GetOptions, PutOptions, SortOrder, SortTarget};
use clap::{Args, ValueEnum};

use crate::args::parse_lease_id;
use crate::output::{self, Format};

/// `put KEY VALUE`.
#[derive(Debug, Args)]
pub struct PutArgs {
    /// The key.
    pub key: String,
    /// The value.
    pub value: String,
    /// Print the previous key-value.
    #[arg(long)]
    pub prev_kv: bool,
    /// Attach the key to this lease (hex id, as etcdctl prints it).
    #[arg(long, value_parser = parse_lease_id)]
    pub lease: Option<i64>,
}

impl PutArgs {
    /// The client options these flags select.
    pub fn options(&self) -> PutOptions {
        PutOptions {
            prev_kv: self.prev_kv,
            lease: self.lease.unwrap_or(0),
            ..Default::default()
        }
    }
}

/// Sort target of `get --sort-by`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum SortBy {
    /// Key bytes.
    Key,
    /// The key's version.
    Version,
    /// Create revision.
    Create,
    /// Last modification revision.
    Modify,
    /// Value bytes.
    Value,
}

/// Sort direction of `get --order`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Order {
    /// Ascending.
    Ascend,
    /// Descending.
    Descend,
}

/// The keys a command selects, with etcdctl's rules: KEY alone, KEY to RANGE_END (exclusive),
/// `--prefix` or `--from-key`. Shared by `get`, `del` and `watch`.
#[derive(Debug, Args)]
pub struct KeyRangeArgs {
    /// The key (or the start of the range).
    pub key: String,
    /// Exclusive end of the range.
    pub range_end: Option<String>,
    /// Every key starting with KEY.
    #[arg(long, conflicts_with_all = ["from_key", "range_end"])]
    pub prefix: bool,
    /// Every key greater than or equal to KEY.
    #[arg(long, conflicts_with = "range_end")]
    pub from_key: bool,
}

impl KeyRangeArgs {
    /// The explicit range end as bytes, if one was given.
    pub fn range_end_bytes(&self) -> Option<Vec<u8>> {
        self.range_end.as_ref().map(|end| end.as_bytes().to_vec())
    }
}

/// `get KEY [RANGE_END]`.
#[derive(Debug, Args)]
pub struct GetArgs {
    #[command(flatten)]
    pub keys: KeyRangeArgs,
    /// Read at this revision (0 = latest).
    #[arg(long = "rev", default_value_t = 0)]
    pub revision: i64,
    /// At most this many keys (0 = no limit).
    #[arg(long, default_value_t = 0)]
    pub limit: i64,
    /// Keys only, without values.
    #[arg(long)]
    pub keys_only: bool,
    /// Only the number of keys.
    #[arg(long)]
    pub count_only: bool,
    /// Read the contacted member's local state (fast, possibly stale).
    #[arg(long)]
    pub serializable: bool,
    /// Sort by this field.
    #[arg(long, value_enum)]
    pub sort_by: Option<SortBy>,
    /// Sort order (ascend when only --sort-by is given).
    #[arg(long, value_enum)]
    pub order: Option<Order>,
}

impl GetArgs {
    /// The client options these flags select.
    pub fn options(&self) -> GetOptions {
        let sort_target = match self.sort_by {
            None | Some(SortBy::Key) => SortTarget::Key,
            Some(SortBy::Version) => SortTarget::Version,
            Some(SortBy::Create) => SortTarget::Create,
            Some(SortBy::Modify) => SortTarget::Modify,
            Some(SortBy::Value) => SortTarget::Value,
        };
        let sort_order = match (self.order, self.sort_by) {
            (Some(Order::Ascend), _) | (None, Some(_)) => SortOrder::Ascend,
            (Some(Order::Descend), _) => SortOrder::Descend,
            (None, None) => SortOrder::None,
        };
        GetOptions {
            prefix: self.keys.prefix,
            from_key: self.keys.from_key,
            range_end: self.keys.range_end_bytes(),
            revision: self.revision,
            limit: self.limit,
            keys_only: self.keys_only,
            count_only: self.count_only,
            serializable: self.serializable,
            sort_target,
            sort_order,
        }
    }
}

/// `del KEY [RANGE_END]`.
#[derive(Debug, Args)]
pub struct DeleteArgs {
    #[command(flatten)]
    pub keys: KeyRangeArgs,
    /// Print the deleted key-values.
    #[arg(long)]
    pub prev_kv: bool,
}

impl DeleteArgs {
    /// The client options these flags select.
    pub fn options(&self) -> DeleteOptions {
        DeleteOptions {
            prefix: self.keys.prefix,
            from_key: self.keys.from_key,
            range_end: self.keys.range_end_bytes(),
            prev_kv: self.prev_kv,
        }
    }
}

/// `compact REV`.
#[derive(Debug, Args)]
pub struct CompactArgs {
    /// Compact all history before this revision.
    pub revision: i64,
    /// Wait until the compacted space is reclaimed.
    #[arg(long)]
    pub physical: bool,
}

/// Runs `put`.
pub async fn put(client: &Client, format: Format, args: PutArgs) -> anyhow::Result<()> {
    let response = client.put(&args.key, &args.value, args.options()).await?;
    println!("{}", output::put(format, &response));
    Ok(())
}

/// Runs `get`.
pub async fn get(client: &Client, format: Format, args: GetArgs) -> anyhow::Result<()> {
    let response = client.get(&args.keys.key, args.options()).await?;
    println!(
        "{}",
        output::range(format, &response, args.keys_only, args.count_only)
    );
    Ok(())
}

/// Runs `del`.
pub async fn delete(client: &Client, format: Format, args: DeleteArgs) -> anyhow::Result<()> {
    let response = client.delete(&args.keys.key, args.options()).await?;
    println!("{}", output::delete(format, &response));
    Ok(())
}

/// Runs `compact`.
pub async fn compact(client: &Client, format: Format, args: CompactArgs) -> anyhow::Result<()> {
    let response = client.compact(args.revision, args.physical).await?;
    println!("{}", output::compact(format, args.revision, &response));
    Ok(())
}
