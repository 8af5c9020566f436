//! Moving rows and large objects between the server and the repository:
//! `COPY ... TO STDOUT` into a snapshot session, and `COPY ... FROM STDIN`
//! from a snapshot file's content.
//!
//! The text format is used both ways: it is what pg_dump uses, it restores
//! into any later server version and any type with text I/O (binary COPY
//! needs every type's binary send/receive functions and the same type
//! layouts on both sides), and it stores smaller. Measured on a 600,000-row
//! table (timestamps, numerics, floats, jsonb; benches/README-pg.md): binary COPY
//! was produced about 15% faster by the server, but stored 10% larger
//! (34.5 vs 31.3 MB after compression) and its day-2 growth was 14% larger.
//! The server sends one CopyData message per row, so messages are gathered
//! into [`BATCH`]-sized buffers before chunking.

use std::sync::atomic::AtomicU64;

use bytes::{Bytes, BytesMut};
use cairn_repo::TreeLoader;
use cairn_repo::{Content, Node, SourceContext};
use futures::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio_postgres::Client;

use crate::connect::{qualified, quote_ident};
use crate::error::{Error, Result};

/// Bytes gathered from COPY messages before they are chunked, and the size
/// of the pieces sent back on restore.
pub const BATCH: usize = 1 << 20;
/// Large objects are read and written in pieces of this size.
const LO_PIECE: i32 = 1 << 20;

/// The `COPY` statement for a table and direction (`TO STDOUT`, `FROM STDIN`).
pub fn copy_sql(schema: &str, name: &str, columns: &[String], direction: &str) -> String {
    if columns.is_empty() {
        // A table without columns still has rows (empty lines).
        format!("COPY {} {direction}", qualified(schema, name))
    } else {
        let cols: Vec<String> = columns.iter().map(|c| quote_ident(c)).collect();
        format!("COPY {} ({}) {direction}", qualified(schema, name), cols.join(", "))
    }
}

/// The `COPY ... TO STDOUT` of [`copy_out`]: the table itself when
/// neither `filter` nor `order_by` is given (its rows in heap order), else
/// a query over `ONLY` the table, as pg_dump writes one for a filter.
pub fn copy_out_sql(schema: &str, name: &str, columns: &[String], filter: &str, order_by: &[String]) -> String {
    if filter.trim().is_empty() && order_by.is_empty() {
        return copy_sql(schema, name, columns, "TO STDOUT");
    }
    let cols = if columns.is_empty() {
        "*".to_owned()
    } else {
        columns.iter().map(|c| quote_ident(c)).collect::<Vec<_>>().join(", ")
    };
    let mut sql = format!("COPY (SELECT {cols} FROM ONLY {}", qualified(schema, name));
    if !filter.trim().is_empty() {
        sql.push(' ');
        sql.push_str(filter.trim());
    }
    if !order_by.is_empty() {
        let keys: Vec<String> = order_by.iter().map(|c| quote_ident(c)).collect();
        sql.push_str(&format!(" ORDER BY {}", keys.join(", ")));
    }
    sql.push_str(") TO STDOUT");
    sql
}

/// Copies a table's rows out into the repository; returns the content and
/// the row count (rows end with a newline in the text format, and a newline
/// inside a value is escaped as `\n`). A `filter` (`WHERE ...`, an
/// extension's configuration table's condition) copies only the rows it
/// selects; `order_by` (key columns) sorts them.
pub async fn copy_out(
    client: &Client,
    schema: &str,
    name: &str,
    columns: &[String],
    filter: &str,
    order_by: &[String],
    into: &SourceContext,
) -> Result<(Content, u64)> {
    let what = qualified(schema, name);
    let sql = copy_out_sql(schema, name, columns, filter, order_by);
    let stream = client.copy_out(sql.as_str()).await.map_err(|e| read_error(&what, e))?;
    let mut stream = std::pin::pin!(stream);
    let mut sink = into.stream()?;
    let mut batch = BytesMut::with_capacity(BATCH);
    let mut rows = 0u64;
    while let Some(piece) = stream.next().await {
        let piece = piece.map_err(|e| read_error(&what, e))?;
        rows += piece.iter().filter(|&&b| b == b'\n').count() as u64;
        batch.extend_from_slice(&piece);
        if batch.len() >= BATCH {
            sink.send(batch.split().freeze()).await?;
            batch.reserve(BATCH);
        }
    }
    if !batch.is_empty() {
        sink.send(batch.freeze()).await?;
    }
    Ok((sink.finish().await?, rows))
}

/// The error for a table that could not be read, with the fix for the
/// common case of missing privileges.
pub fn read_error(what: &str, e: tokio_postgres::Error) -> Error {
    let denied = e.code().is_some_and(|c| c.code() == "42501");
    let mut err = Error::query(format!("cannot read table {what}"), e);
    if denied {
        if let Error::Query { message, .. } = &mut err {
            message.push_str(
                " (grant the backup role SELECT on it, or leave it out with --exclude-table or --exclude-table-data)",
            );
        }
    }
    err
}

/// Copies one large object into the repository.
pub async fn copy_large_object(client: &Client, oid: u32, into: &SourceContext) -> Result<Content> {
    let statement = client
        .prepare("SELECT lo_get($1::int8::oid, $2::int8, $3::int4)")
        .await
        .map_err(|e| Error::query("preparing to read large objects", e))?;
    let mut sink = into.stream()?;
    let mut offset = 0i64;
    loop {
        let row = client
            .query_one(&statement, &[&(oid as i64), &offset, &LO_PIECE])
            .await
            .map_err(|e| Error::query(format!("cannot read large object {oid}"), e))?;
        let piece: Vec<u8> = row.get(0);
        let n = piece.len();
        if n > 0 {
            sink.send(Bytes::from(piece)).await?;
        }
        offset += n as i64;
        if n < LO_PIECE as usize {
            break;
        }
    }
    Ok(sink.finish().await?)
}

/// Streams a snapshot file into a running statement, piece by piece: the
/// repository is read on a blocking thread and the pieces cross a small
/// channel, so memory stays at a few pieces.
fn read_pieces(loader: &TreeLoader, node: &Node) -> mpsc::Receiver<std::io::Result<Bytes>> {
    let (tx, rx) = mpsc::channel(4);
    let (loader, node) = (loader.clone(), node.clone());
    tokio::task::spawn_blocking(move || {
        use std::io::Read;
        let mut reader = loader.content(&node);
        loop {
            let mut buf = vec![0u8; BATCH];
            let mut filled = 0;
            while filled < BATCH {
                match reader.read(&mut buf[filled..]) {
                    Ok(0) => break,
                    Ok(n) => filled += n,
                    Err(e) => {
                        let _ = tx.blocking_send(Err(e));
                        return;
                    }
                }
            }
            if filled == 0 {
                return;
            }
            buf.truncate(filled);
            if tx.blocking_send(Ok(Bytes::from(buf))).is_err() {
                return;
            }
        }
    });
    rx
}

/// Loads a table's rows from its snapshot file; returns the row count the
/// server reports.
///
/// The table must be the one the restore's pre-data step just created
/// (empty): the COPY runs as `BEGIN; TRUNCATE ONLY t; COPY t FROM STDIN
/// (FREEZE); COMMIT`. Truncating the new, empty table in the same
/// transaction is what allows `FREEZE`: rows are written frozen and pages
/// all-visible, so the ANALYZE and index builds that follow read them
/// without setting hint bits and writing every page again (pg_restore -j
/// also truncates before its COPY, for the WAL skip under
/// `wal_level=minimal`, which this gets too).
///
/// With `fresh` false (an extension's configuration table, which its
/// script created and may have filled), the rows are added to what the
/// table holds: no TRUNCATE, no FREEZE.
#[allow(clippy::too_many_arguments)]
pub async fn copy_in(
    client: &Client,
    schema: &str,
    name: &str,
    columns: &[String],
    fresh: bool,
    loader: &TreeLoader,
    node: &Node,
    counter: &AtomicU64,
) -> Result<u64> {
    let what = qualified(schema, name);
    let err = |e| Error::query(format!("cannot load table {what}"), e);
    let (begin, options) =
        if fresh { (format!("BEGIN; TRUNCATE ONLY {what}"), " (FREEZE)") } else { ("BEGIN".to_owned(), "") };
    client.batch_execute(&begin).await.map_err(err)?;
    let sql = copy_sql(schema, name, columns, &format!("FROM STDIN{options}"));
    let sink = client.copy_in::<_, Bytes>(sql.as_str()).await.map_err(err)?;
    let mut sink = std::pin::pin!(sink);
    let mut pieces = read_pieces(loader, node);
    while let Some(piece) = pieces.recv().await {
        let piece = piece.map_err(|e| Error::io(format!("reading the data of {what} from the repository"), e))?;
        counter.fetch_add(piece.len() as u64, std::sync::atomic::Ordering::Relaxed);
        sink.send(piece).await.map_err(err)?;
    }
    let rows = sink.as_mut().finish().await.map_err(err)?;
    client.batch_execute("COMMIT").await.map_err(err)?;
    Ok(rows)
}

/// Writes a large object from its snapshot file, creating it with its OID
/// when the schema archive has not (it has, with its owner, comment and
/// privileges, unless the backup was limited to some tables).
pub async fn load_large_object(client: &Client, oid: u32, loader: &TreeLoader, node: &Node) -> Result<()> {
    let err = |e| Error::query(format!("cannot restore large object {oid}"), e);
    client
        .execute(
            "SELECT lo_create($1::int8::oid) WHERE NOT EXISTS \
             (SELECT 1 FROM pg_largeobject_metadata WHERE oid = $1::int8::oid)",
            &[&(oid as i64)],
        )
        .await
        .map_err(err)?;
    let statement = client.prepare("SELECT lo_put($1::int8::oid, $2::int8, $3::bytea)").await.map_err(err)?;
    let mut pieces = read_pieces(loader, node);
    let mut offset = 0i64;
    while let Some(piece) = pieces.recv().await {
        let piece = piece.map_err(|e| Error::io(format!("reading large object {oid} from the repository"), e))?;
        client.execute(&statement, &[&(oid as i64), &offset, &piece.as_ref()]).await.map_err(err)?;
        offset += piece.len() as i64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_statements_follow_filter_and_order() {
        let cols = vec!["id".to_owned(), "a b".to_owned()];
        assert_eq!(copy_out_sql("s", "t", &cols, "", &[]), "COPY \"s\".\"t\" (\"id\", \"a b\") TO STDOUT");
        assert_eq!(
            copy_out_sql("s", "t", &cols, "WHERE x", &[]),
            "COPY (SELECT \"id\", \"a b\" FROM ONLY \"s\".\"t\" WHERE x) TO STDOUT"
        );
        assert_eq!(
            copy_out_sql("s", "t", &cols, " ", &["id".into(), "a b".into()]),
            "COPY (SELECT \"id\", \"a b\" FROM ONLY \"s\".\"t\" ORDER BY \"id\", \"a b\") TO STDOUT"
        );
        assert_eq!(
            copy_out_sql("s", "t", &[], "WHERE x", &["k".into()]),
            "COPY (SELECT * FROM ONLY \"s\".\"t\" WHERE x ORDER BY \"k\") TO STDOUT"
        );
    }
}
