//! `txn`: a transaction from flags (`--compare`, `--success`, `--failure`, repeatable) or from
//! stdin in etcdctl's interactive format — compares, a blank line, success operations, a blank
//! line, failure operations:
//!
//! ```text
//! mod("k") = "0"
//! value("k") != "v"
//!
//! put k v
//!
//! get k --prefix
//! ```
//!
//! Compare targets: `version`/`ver`, `create`/`c`, `mod`/`m`, `value`/`val`, `lease` (hex id);
//! operators `=`, `!=`, `<`, `>`. Operations are `put`, `get` and `del` with the same flags as
//! the top-level commands (they are parsed by the same clap definitions).

use std::io::{BufRead, IsTerminal};

use anyhow::Context;
use beacon_client::{pb, Client};
use clap::{Args, Parser};

use super::kv::{DeleteArgs, GetArgs, PutArgs};
use crate::args::parse_lease_id;
use crate::output::{self, Format};

/// `txn`.
#[derive(Debug, Args)]
pub struct TxnArgs {
    /// A comparison, e.g. 'value("k") = "v"' (repeatable). Without any of the three flags the
    /// transaction is read from stdin.
    #[arg(long = "compare")]
    pub compares: Vec<String>,
    /// An operation run when every comparison holds, e.g. 'put k v' (repeatable).
    #[arg(long)]
    pub success: Vec<String>,
    /// An operation run otherwise, e.g. 'get k' (repeatable).
    #[arg(long)]
    pub failure: Vec<String>,
}

/// Runs `txn`.
pub async fn run(client: &Client, format: Format, args: TxnArgs) -> anyhow::Result<()> {
    let (compares, success, failure) =
        if args.compares.is_empty() && args.success.is_empty() && args.failure.is_empty() {
            tokio::task::spawn_blocking(read_sections)
                .await
                .context("reading the transaction from stdin")??
        } else {
            (args.compares, args.success, args.failure)
        };
    let request = build_request(&compares, &success, &failure)?;
    let response = client.txn(request).await?;
    println!("{}", output::txn(format, &response));
    Ok(())
}

type Sections = (Vec<String>, Vec<String>, Vec<String>);

/// Reads the three blank-line-separated sections from stdin, prompting like etcdctl when stdin
/// is a terminal.
fn read_sections() -> anyhow::Result<Sections> {
    let stdin = std::io::stdin();
    let interactive = stdin.is_terminal();
    let prompts = [
        "compares:",
        "success requests (get, put, del):",
        "failure requests (get, put, del):",
    ];
    let mut sections: [Vec<String>; 3] = Default::default();
    let mut lines = stdin.lock().lines();
    for (section, prompt) in sections.iter_mut().zip(prompts) {
        if interactive {
            eprintln!("{prompt}");
        }
        loop {
            match lines.next() {
                None => break,
                Some(line) => {
                    let line = line.context("reading stdin")?;
                    if line.trim().is_empty() {
                        break;
                    }
                    section.push(line.trim().to_string());
                }
            }
        }
    }
    let [compares, success, failure] = sections;
    Ok((compares, success, failure))
}

/// The wire request for textual compares and operations.
pub fn build_request(
    compares: &[String],
    success: &[String],
    failure: &[String],
) -> anyhow::Result<pb::TxnRequest> {
    let parse_ops = |lines: &[String]| -> anyhow::Result<Vec<pb::RequestOp>> {
        lines
            .iter()
            .map(|line| parse_op(line).with_context(|| format!("bad operation {line:?}")))
            .collect()
    };
    Ok(pb::TxnRequest {
        compare: compares
            .iter()
            .map(|line| {
                parse_compare(line)
                    .map_err(|error| anyhow::anyhow!("bad compare {line:?}: {error}"))
            })
            .collect::<anyhow::Result<_>>()?,
        success: parse_ops(success)?,
        failure: parse_ops(failure)?,
    })
}

/// An operation line, parsed with the top-level commands' own argument definitions.
#[derive(Debug, Parser)]
#[command(no_binary_name = true)]
enum TxnOp {
    /// Write a key.
    Put(PutArgs),
    /// Read a key or range.
    Get(GetArgs),
    /// Delete a key or range.
    #[command(alias = "delete")]
    Del(DeleteArgs),
}

fn parse_op(line: &str) -> anyhow::Result<pb::RequestOp> {
    use pb::request_op::Request;
    let words = split_words(line).map_err(anyhow::Error::msg)?;
    let op = TxnOp::try_parse_from(words).map_err(|error| {
        anyhow::anyhow!(error
            .render()
            .to_string()
            .lines()
            .next()
            .unwrap_or_default()
            .to_string())
    })?;
    let request = match op {
        TxnOp::Put(args) => Request::RequestPut(
            args.options()
                .to_request(args.key.as_bytes(), args.value.as_bytes()),
        ),
        TxnOp::Get(args) => {
            Request::RequestRange(args.options().to_request(args.keys.key.as_bytes()))
        }
        TxnOp::Del(args) => {
            Request::RequestDeleteRange(args.options().to_request(args.keys.key.as_bytes()))
        }
    };
    Ok(pb::RequestOp {
        request: Some(request),
    })
}

/// Splits a line into words like a shell: whitespace separates, `"…"` (with `\` escapes) and
/// `'…'` quote.
fn split_words(line: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut current: Option<String> = None;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if let Some(word) = current.take() {
                    words.push(word);
                }
            }
            '"' => {
                let word = current.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        None => return Err("unterminated \"".into()),
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some('n') => word.push('\n'),
                            Some('t') => word.push('\t'),
                            Some(other) => word.push(other),
                            None => return Err("dangling \\".into()),
                        },
                        Some(other) => word.push(other),
                    }
                }
            }
            '\'' => {
                let word = current.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        None => return Err("unterminated '".into()),
                        Some('\'') => break,
                        Some(other) => word.push(other),
                    }
                }
            }
            other => current.get_or_insert_with(String::new).push(other),
        }
    }
    words.extend(current);
    Ok(words)
}

/// Parses `TARGET("KEY"[, "RANGE_END"]) OP "VALUE"`.
fn parse_compare(line: &str) -> Result<pb::Compare, String> {
    use pb::compare::{CompareResult, CompareTarget, TargetUnion};
    let open = line.find('(').ok_or("expected TARGET(\"KEY\")")?;
    let close = line.rfind(')').ok_or("missing )")?;
    if close < open {
        return Err("missing )".into());
    }
    let target = line[..open].trim().to_ascii_lowercase();
    let mut inside = split_words(&line[open + 1..close].replace(',', " "))?;
    let (key, range_end) = match inside.len() {
        1 => (inside.remove(0), String::new()),
        2 => {
            let range_end = inside.remove(1);
            (inside.remove(0), range_end)
        }
        _ => return Err("expected one key (or key, range end) inside the parentheses".into()),
    };
    let rest = line[close + 1..].trim();
    let (result, value) = if let Some(value) = rest.strip_prefix("!=") {
        (CompareResult::NotEqual, value)
    } else if let Some(value) = rest.strip_prefix("==") {
        (CompareResult::Equal, value)
    } else if let Some(value) = rest.strip_prefix('=') {
        (CompareResult::Equal, value)
    } else if let Some(value) = rest.strip_prefix('<') {
        (CompareResult::Less, value)
    } else if let Some(value) = rest.strip_prefix('>') {
        (CompareResult::Greater, value)
    } else {
        return Err("expected an operator: = != < >".into());
    };
    let mut value_words = split_words(value)?;
    if value_words.len() != 1 {
        return Err("expected one value after the operator (quote it if it has spaces)".into());
    }
    let value = value_words.remove(0);
    let number = |value: &str| {
        value
            .parse::<i64>()
            .map_err(|_| format!("{target} compares against an integer, not {value:?}"))
    };
    let (target, target_union) = match target.as_str() {
        "version" | "ver" => (
            CompareTarget::Version,
            TargetUnion::Version(number(&value)?),
        ),
        "create" | "c" => (
            CompareTarget::Create,
            TargetUnion::CreateRevision(number(&value)?),
        ),
        "mod" | "m" => (
            CompareTarget::Mod,
            TargetUnion::ModRevision(number(&value)?),
        ),
        "value" | "val" => (CompareTarget::Value, TargetUnion::Value(value.into_bytes())),
        "lease" => (
            CompareTarget::Lease,
            TargetUnion::Lease(parse_lease_id(&value)?),
        ),
        other => {
            return Err(format!(
                "unknown target {other:?} (version, create, mod, value, lease)"
            ))
        }
    };
    Ok(pb::Compare {
        result: result as i32,
        target: target as i32,
        key: key.into_bytes(),
        target_union: Some(target_union),
        range_end: range_end.into_bytes(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use pb::compare::{CompareResult, CompareTarget, TargetUnion};
    use pb::request_op::Request;

    #[test]
    fn compares_in_etcdctl_syntax() {
        let compare = parse_compare(r#"mod("k") = "0""#).expect("valid");
        assert_eq!(compare.target, CompareTarget::Mod as i32);
        assert_eq!(compare.result, CompareResult::Equal as i32);
        assert_eq!(compare.key, b"k");
        assert_eq!(compare.target_union, Some(TargetUnion::ModRevision(0)));

        let compare = parse_compare(r#"value("a key") != "two words""#).expect("valid");
        assert_eq!(compare.key, b"a key");
        assert_eq!(compare.result, CompareResult::NotEqual as i32);
        assert_eq!(
            compare.target_union,
            Some(TargetUnion::Value(b"two words".to_vec()))
        );

        let compare = parse_compare(r#"version("k") > "1""#).expect("valid");
        assert_eq!(compare.target_union, Some(TargetUnion::Version(1)));
        assert_eq!(compare.result, CompareResult::Greater as i32);
        let compare = parse_compare(r#"create("k") < "5""#).expect("valid");
        assert_eq!(compare.target_union, Some(TargetUnion::CreateRevision(5)));
        let compare = parse_compare(r#"lease("k") = "0""#).expect("valid");
        assert_eq!(compare.target_union, Some(TargetUnion::Lease(0)));
    }

    #[test]
    fn bad_compares_are_rejected_with_a_reason() {
        assert!(parse_compare(r#"colour("k") = "red""#).is_err());
        assert!(parse_compare(r#"version("k") = "x""#).is_err());
        assert!(parse_compare(r#"value("k") ~ "v""#).is_err());
        assert!(parse_compare("value k").is_err());
    }

    #[test]
    fn operations_reuse_the_command_flags() {
        let op = parse_op("put k 'v 1' --prev-kv").expect("valid");
        let Some(Request::RequestPut(put)) = op.request else {
            panic!("expected a put: {op:?}");
        };
        assert_eq!(
            (put.key, put.value, put.prev_kv),
            (b"k".to_vec(), b"v 1".to_vec(), true)
        );

        let op = parse_op("get dir/ --prefix").expect("valid");
        let Some(Request::RequestRange(range)) = op.request else {
            panic!("expected a range: {op:?}");
        };
        assert_eq!(range.range_end, b"dir0");

        let op = parse_op("del k").expect("valid");
        assert!(matches!(op.request, Some(Request::RequestDeleteRange(_))));
        assert!(parse_op("frobnicate k").is_err());
        assert!(parse_op("put k").is_err());
    }

    #[test]
    fn words_split_like_a_shell() {
        assert_eq!(
            split_words(r#"put "a b" c\d 'e"f'"#).expect("valid"),
            vec!["put", "a b", r"c\d", "e\"f"]
        );
        assert!(split_words("put \"open").is_err());
    }
}
