//! Output: every command builds one value; `-o json` prints it as JSON, tables print it for people.

use clap::ValueEnum;
use serde::Serialize;

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq, Debug)]
pub enum Output {
    Table,
    Json,
}

/// A command's answer, as a table for people (its JSON is its serde form).
pub trait Render: Serialize {
    fn table(&self) -> String;
}

pub fn emit<T: Render>(output: Output, value: &T) {
    match output {
        Output::Json => print_json(value),
        Output::Table => print!("{}", value.table()),
    }
}

pub fn print_json<T: Serialize + ?Sized>(v: &T) {
    println!("{}", serde_json::to_string_pretty(v).expect("json"));
}

/// Columns padded to their widest cell.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.len());
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let s: Vec<String> = cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        out.push_str(s.join("  ").trim_end());
        out.push('\n');
    };
    line(header.to_vec());
    for r in rows {
        line(r.iter().map(String::as_str).collect());
    }
    out
}

/// A list for a table cell: comma-separated, `-` when empty.
pub fn cell(items: impl IntoIterator<Item = String>) -> String {
    let v: Vec<String> = items.into_iter().collect();
    if v.is_empty() {
        "-".into()
    } else {
        v.join(",")
    }
}
