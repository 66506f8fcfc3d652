//! Which policy applies to a key: the key's own, else the longest matching prefix set with
//! `SetPolicy`, else WhatsApp's built-in default for the key's kind (`throughput:`, `pair:`,
//! `tier:`, `graph:`). Stored rules live with the buckets (see `Backend::load_policies`).
use std::collections::BTreeMap;

use crate::model::Policy;

/// WhatsApp's limits (`../shared/docs/whatsapp-cloud-api.md`, Limits).
pub mod whatsapp {
    use crate::model::Policy;

    /// Messages per second of a business number: 80 by default.
    pub const THROUGHPUT_DEFAULT: Policy = per_second(80.0);
    /// After Meta's automatic upgrade.
    pub const THROUGHPUT_UPGRADED: Policy = per_second(1_000.0);
    /// Numbers shared with the WhatsApp Business app (coexistence).
    pub const THROUGHPUT_COEXISTENCE: Policy = per_second(20.0);
    /// The same user: about one message per 6 s; bursts of up to 45 borrow from the future.
    pub const PAIR: Policy = Policy::TokenBucket {
        capacity: 45.0,
        refill_per_second: 1.0 / 6.0,
    };
    /// Graph API management calls: 200 an hour (5,000 for active accounts).
    pub const GRAPH: Policy = Policy::TokenBucket {
        capacity: 200.0,
        refill_per_second: 200.0 / 3600.0,
    };
    pub const GRAPH_ACTIVE: Policy = Policy::TokenBucket {
        capacity: 5_000.0,
        refill_per_second: 5_000.0 / 3600.0,
    };
    /// The messaging-limit tiers: unique users reached outside the service window per moving
    /// 24 hours. A new portfolio starts at 250.
    pub const TIER_250: Policy = tier(250);
    pub const TIER_2K: Policy = tier(2_000);
    pub const TIER_10K: Policy = tier(10_000);
    pub const TIER_100K: Policy = tier(100_000);
    pub const TIER_UNLIMITED: Policy = tier(0);

    const fn per_second(rate: f64) -> Policy {
        Policy::TokenBucket {
            capacity: rate,
            refill_per_second: rate,
        }
    }

    const fn tier(limit: u64) -> Policy {
        Policy::DistinctWindow {
            limit,
            window_ms: 24 * 3600 * 1000,
        }
    }

    /// Policies by name, for `SetPolicy` callers and operators.
    pub const NAMED: [(&str, Policy); 11] = [
        ("throughput", THROUGHPUT_DEFAULT),
        ("throughput-upgraded", THROUGHPUT_UPGRADED),
        ("throughput-coexistence", THROUGHPUT_COEXISTENCE),
        ("pair", PAIR),
        ("graph", GRAPH),
        ("graph-active", GRAPH_ACTIVE),
        ("tier-250", TIER_250),
        ("tier-2000", TIER_2K),
        ("tier-10000", TIER_10K),
        ("tier-100000", TIER_100K),
        ("tier-unlimited", TIER_UNLIMITED),
    ];
}

/// The built-in rules, by key prefix.
pub const BUILTIN: [(&str, Policy); 4] = [
    ("throughput:", whatsapp::THROUGHPUT_DEFAULT),
    ("pair:", whatsapp::PAIR),
    ("tier:", whatsapp::TIER_250),
    ("graph:", whatsapp::GRAPH),
];

/// A policy and the rule it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolved {
    pub policy: Policy,
    /// The selector (`key` or `prefix*`) or `builtin:<prefix>`.
    pub source: String,
}

/// The rules in force: stored selectors plus the built-ins.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PolicyTable {
    keys: BTreeMap<String, Policy>,
    prefixes: BTreeMap<String, Policy>,
}

impl PolicyTable {
    pub fn from_rules(rules: impl IntoIterator<Item = (String, Policy)>) -> Self {
        let mut table = Self::default();
        for (selector, policy) in rules {
            table.set(&selector, Some(policy));
        }
        table
    }

    /// Sets (or with `None` removes) the rule of a selector: a key, or a prefix ending in `*`.
    pub fn set(&mut self, selector: &str, policy: Option<Policy>) {
        let (map, name) = match selector.strip_suffix('*') {
            Some(prefix) => (&mut self.prefixes, prefix),
            None => (&mut self.keys, selector),
        };
        match policy {
            Some(policy) => map.insert(name.to_owned(), policy),
            None => map.remove(name),
        };
    }

    /// The policy of `key` and the rule it came from (for `GetPolicy`).
    pub fn resolve(&self, key: &str) -> Option<Resolved> {
        self.find(key).map(|(policy, rule)| Resolved {
            policy,
            source: match rule {
                Rule::Key => key.to_owned(),
                Rule::Prefix(prefix) => format!("{prefix}*"),
                Rule::Builtin(prefix) => format!("builtin:{prefix}"),
            },
        })
    }

    /// The policy of `key` and its metric label, allocating nothing (every decision asks).
    pub fn lookup(&self, key: &str) -> Option<(Policy, &'static str)> {
        self.find(key).map(|(policy, rule)| {
            let label = match rule {
                Rule::Key => "key",
                Rule::Prefix(prefix) | Rule::Builtin(prefix) => kind_of(prefix),
            };
            (policy, label)
        })
    }

    /// A key's own rule, else the longest matching stored prefix, else the built-in one.
    fn find(&self, key: &str) -> Option<(Policy, Rule<'_>)> {
        if let Some(policy) = self.keys.get(key) {
            return Some((*policy, Rule::Key));
        }
        let stored = self
            .prefixes
            .iter()
            .filter(|(prefix, _)| key.starts_with(prefix.as_str()))
            .max_by_key(|(prefix, _)| prefix.len())
            .map(|(prefix, policy)| (*policy, Rule::Prefix(prefix)));
        stored.or_else(|| {
            BUILTIN
                .iter()
                .find(|(prefix, _)| key.starts_with(prefix))
                .map(|(prefix, policy)| (*policy, Rule::Builtin(prefix)))
        })
    }

    /// A short, bounded name for metrics and logs of a rule's selector or source: the kind of
    /// its prefix, or `key` (never the key itself, which may hold a user's phone number).
    pub fn metric_label(source: &str) -> &'static str {
        match source
            .strip_prefix("builtin:")
            .or_else(|| source.strip_suffix('*'))
        {
            Some(prefix) => kind_of(prefix),
            None => "key",
        }
    }
}

/// Where a key's policy comes from.
enum Rule<'a> {
    Key,
    Prefix(&'a str),
    Builtin(&'static str),
}

/// The kinds of bucket metrics are labelled with: the built-in prefixes, and `other`.
pub const KINDS: [&str; 5] = ["throughput", "pair", "tier", "graph", "other"];

/// The kind of a key or prefix: its known first part (`pair` for `pair:1:…`), else `other`.
pub fn kind_of(key: &str) -> &'static str {
    let first = key.split(':').next().unwrap_or_default();
    KINDS[..4]
        .iter()
        .find(|kind| **kind == first)
        .copied()
        .unwrap_or("other")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_rule_beats_the_longest_prefix_which_beats_the_builtin() {
        let mut table = PolicyTable::default();
        assert_eq!(
            table.resolve("throughput:1").unwrap().source,
            "builtin:throughput:"
        );
        table.set("throughput:*", Some(whatsapp::THROUGHPUT_COEXISTENCE));
        table.set("throughput:12*", Some(whatsapp::THROUGHPUT_UPGRADED));
        table.set("throughput:123", Some(whatsapp::THROUGHPUT_DEFAULT));
        assert_eq!(
            table.resolve("throughput:1").unwrap().policy,
            whatsapp::THROUGHPUT_COEXISTENCE
        );
        assert_eq!(
            table.resolve("throughput:129").unwrap().source,
            "throughput:12*"
        );
        assert_eq!(
            table.resolve("throughput:123").unwrap().source,
            "throughput:123"
        );
        table.set("throughput:123", None);
        assert_eq!(
            table.resolve("throughput:123").unwrap().source,
            "throughput:12*"
        );
        assert_eq!(table.resolve("nothing-like-it"), None);
    }

    #[test]
    fn metric_labels_never_carry_the_key() {
        assert_eq!(PolicyTable::metric_label("builtin:pair:"), "pair");
        assert_eq!(PolicyTable::metric_label("pair:123:*"), "pair");
        assert_eq!(PolicyTable::metric_label("pair:123:15551234567"), "key");
    }
}
