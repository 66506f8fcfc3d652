//! SQL both backends share: the WHERE clause of a [`Selection`] and the GROUP BY of message
//! sums. Values are always bound, never spliced; only column names (fixed here) are.
use super::{GroupBy, Selection};

/// A bind value of a selection's WHERE clause.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bind {
    Text(String),
    Int(i64),
}

/// The WHERE clause of `selection` over a rollup table, with `placeholder(n)` for the n-th
/// (1-based) bound value, and its values in order. `dims` says which filters the table has
/// (the conversation and sketch tables have fewer dimensions than message rollups).
pub fn where_clause(
    selection: &Selection,
    dims: &[&str],
    placeholder: impl Fn(usize) -> String,
) -> (String, Vec<Bind>) {
    let mut binds = Vec::new();
    let next = |value: Bind, binds: &mut Vec<Bind>| {
        binds.push(value);
        placeholder(binds.len())
    };
    let spans: Vec<String> = selection
        .spans
        .iter()
        .map(|(grain, from, to)| {
            let g = next(Bind::Text(grain.as_str().to_owned()), &mut binds);
            let f = next(Bind::Int(*from), &mut binds);
            let t = next(Bind::Int(*to), &mut binds);
            format!("(grain = {g} AND bucket_ms >= {f} AND bucket_ms < {t})")
        })
        .collect();
    let mut clause = if spans.is_empty() {
        "false".to_owned()
    } else {
        format!("({})", spans.join(" OR "))
    };
    let filters: [(&str, Option<Bind>); 6] = [
        ("number", selection.number.clone().map(Bind::Text)),
        ("template", selection.template.clone().map(Bind::Text)),
        (
            "pricing_category",
            selection.pricing_category.clone().map(Bind::Text),
        ),
        ("direction", selection.direction.clone().map(Bind::Text)),
        (
            "message_type",
            selection.message_type.clone().map(Bind::Text),
        ),
        ("error_code", selection.error_code.map(Bind::Int)),
    ];
    for (column, value) in filters {
        if let Some(value) = value
            && dims.contains(&column)
        {
            let p = next(value, &mut binds);
            clause.push_str(&format!(" AND {column} = {p}"));
        }
    }
    (clause, binds)
}

/// The dimensions each rollup table can be filtered by.
pub const MESSAGE_DIMS: [&str; 6] = [
    "number",
    "template",
    "pricing_category",
    "direction",
    "message_type",
    "error_code",
];
pub const CONVERSATION_DIMS: [&str; 1] = ["number"];
pub const DELIVERY_DIMS: [&str; 2] = ["number", "template"];

/// The summed message counters, and the columns of a grouping, as SELECT and GROUP BY lists.
pub fn message_sums(by: GroupBy) -> (String, String) {
    let group = [
        (by.bucket, "bucket_ms", "CAST(0 AS BIGINT)"),
        (by.template, "template", "''"),
        (by.error_code, "error_code", "CAST(0 AS BIGINT)"),
    ];
    let select: Vec<String> = group
        .iter()
        .map(|(on, column, none)| {
            if *on {
                (*column).to_owned()
            } else {
                format!("{none} AS {column}")
            }
        })
        .collect();
    let group_by: Vec<&str> = group
        .iter()
        .filter(|(on, ..)| *on)
        .map(|(_, column, _)| *column)
        .collect();
    // Postgres sums BIGINTs as NUMERIC: cast back.
    let sums: Vec<String> = [
        "messages_in",
        "messages_out",
        "delivered",
        "read",
        "failed",
        "rejected",
        "replied",
        "clicked",
    ]
    .iter()
    .map(|column| format!("CAST(sum({column}) AS BIGINT) AS {column}"))
    .collect();
    let select = format!("{}, {}", select.join(", "), sums.join(", "));
    let group_by = if group_by.is_empty() {
        String::new()
    } else {
        format!("GROUP BY {}", group_by.join(", "))
    };
    (select, group_by)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rollup::Grain;

    #[test]
    fn a_selection_binds_its_spans_and_only_the_filters_a_table_has() {
        let selection = Selection {
            spans: vec![(Grain::Day, 0, 10), (Grain::Hour, 10, 12)],
            number: Some("123".into()),
            template: Some("welcome".into()),
            ..Selection::default()
        };
        let (clause, binds) = where_clause(&selection, &CONVERSATION_DIMS, |n| format!("${n}"));
        assert_eq!(
            clause,
            "((grain = $1 AND bucket_ms >= $2 AND bucket_ms < $3) OR \
             (grain = $4 AND bucket_ms >= $5 AND bucket_ms < $6)) AND number = $7"
        );
        assert_eq!(binds.len(), 7);
        assert_eq!(binds[6], Bind::Text("123".into()));
        let (clause, binds) = where_clause(&selection, &MESSAGE_DIMS, |n| format!("?{n}"));
        assert!(
            clause.ends_with("AND number = ?7 AND template = ?8"),
            "{clause}"
        );
        assert_eq!(binds.len(), 8);
    }

    #[test]
    fn an_empty_selection_selects_nothing() {
        let (clause, binds) =
            where_clause(&Selection::default(), &MESSAGE_DIMS, |n| format!("${n}"));
        assert_eq!((clause.as_str(), binds.len()), ("false", 0));
    }
}
