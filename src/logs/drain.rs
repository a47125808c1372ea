//! A Drain log-template miner (He et al., "Drain: An Online Log Parsing
//! Approach with Fixed Depth Tree", ICWS 2017).
//!
//! Lines are split on whitespace. A fixed-depth prefix tree routes a line by
//! its token count and its first `depth − 3` tokens (a token with a digit
//! goes down the `<*>` branch, and so does any token once a node has
//! `max_children`); the leaf holds clusters, and the line joins the most
//! similar one — share of positions whose tokens are equal, wildcards not
//! counting — when that share reaches `similarity`, else it starts a new
//! cluster. Joining turns every position where the two differ into `<*>`.
//! Before any of this, tokens that are plainly variables (numbers with or
//! without a unit, hex ids, UUIDs, IP addresses) are masked to `<*>`, as
//! Drain's authors do with domain regexes; `mask = false` skips that step
//! (the golden test compares the bare algorithm with the reference Python
//! implementation, drain3).
//!
//! Mining is deterministic and online: the clusters made by a prefix of the
//! lines do not depend on what follows, so ids assigned in order of creation
//! stay the same from one tick to the next.

use std::collections::HashMap;

/// The wildcard a variable token becomes.
pub const WILDCARD: &str = "<*>";

/// The miner's parameters; the defaults are the paper's and drain3's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DrainConfig {
    /// Tree depth counting the root, the token-count layer and the leaves (≥ 3).
    pub depth: usize,
    /// Share of equal tokens, 0..1, a line needs to join a cluster.
    pub similarity: f64,
    /// Children an inner node may have before new tokens share `<*>`.
    pub max_children: usize,
    /// Mask plainly variable tokens before mining.
    pub mask: bool,
    /// Clusters one leaf may hold: a line that fits none of a full leaf's
    /// clusters is left unmined (counted by the caller), so a flood of
    /// unique lines costs at most this many comparisons a line.
    pub max_leaf_clusters: usize,
    /// Clusters in all; past it, lines that fit none are left unmined.
    pub max_clusters: usize,
    /// Tokens of a line that are mined (the rest are ignored).
    pub max_tokens: usize,
}

impl Default for DrainConfig {
    fn default() -> Self {
        Self {
            depth: 4,
            similarity: 0.4,
            max_children: 100,
            mask: true,
            max_leaf_clusters: 200,
            max_clusters: 2_000,
            max_tokens: 64,
        }
    }
}

/// One template and how many lines it has absorbed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cluster {
    /// Index in [`Drain::clusters`], in order of creation.
    pub id: usize,
    pub tokens: Vec<String>,
    pub lines: usize,
}

impl Cluster {
    /// The template as text, tokens joined by one space.
    pub fn template(&self) -> String {
        self.tokens.join(" ")
    }
}

#[derive(Default)]
struct Node {
    children: HashMap<String, Node>,
    clusters: Vec<usize>,
}

/// The miner: feed lines with [`Drain::add`], read [`Drain::clusters`].
pub struct Drain {
    cfg: DrainConfig,
    by_length: HashMap<usize, Node>,
    clusters: Vec<Cluster>,
}

impl Drain {
    pub fn new(cfg: DrainConfig) -> Self {
        Self { cfg: DrainConfig { depth: cfg.depth.max(3), ..cfg }, by_length: HashMap::new(), clusters: Vec::new() }
    }

    /// Every cluster so far, by id.
    pub fn clusters(&self) -> &[Cluster] {
        &self.clusters
    }

    /// Mine one line; the id of the cluster it joined or started, or `None`
    /// when it fits no cluster and there is no room for another (see
    /// [`DrainConfig::max_leaf_clusters`]).
    pub fn add(&mut self, line: &str) -> Option<usize> {
        let tokens: Vec<String> = line
            .split_whitespace()
            .take(self.cfg.max_tokens)
            .map(|t| if self.cfg.mask && is_variable(t) { WILDCARD.to_string() } else { t.to_string() })
            .collect();
        match self.search(&tokens) {
            Some(id) => {
                let c = &mut self.clusters[id];
                for (t, s) in c.tokens.iter_mut().zip(&tokens) {
                    if t != s {
                        *t = WILDCARD.to_string();
                    }
                }
                c.lines += 1;
                Some(id)
            }
            None if self.clusters.len() >= self.cfg.max_clusters => None,
            None => {
                let id = self.clusters.len();
                if !self.insert(&tokens, id) {
                    return None;
                }
                self.clusters.push(Cluster { id, tokens, lines: 1 });
                Some(id)
            }
        }
    }

    /// Token layers between the token-count layer and the leaves (the
    /// depth counts the root, the token-count layer and the leaf layer).
    fn prefix_layers(&self) -> usize {
        self.cfg.depth - 3
    }

    /// The cluster `tokens` belongs to, if one is similar enough.
    fn search(&self, tokens: &[String]) -> Option<usize> {
        let mut node = self.by_length.get(&tokens.len())?;
        for token in tokens.iter().take(self.prefix_layers()) {
            node = node.children.get(token).or_else(|| node.children.get(WILDCARD))?;
        }
        let mut best: Option<(f64, usize, usize)> = None;
        for &id in &node.clusters {
            let (sim, params) = similarity(&self.clusters[id].tokens, tokens);
            if best.is_none_or(|(s, p, _)| sim > s || (sim == s && params > p)) {
                best = Some((sim, params, id));
            }
        }
        best.filter(|(s, _, _)| *s >= self.cfg.similarity).map(|(_, _, id)| id)
    }

    /// Route a new cluster down the tree, growing it as the paper describes;
    /// `false` when its leaf is full.
    fn insert(&mut self, tokens: &[String], id: usize) -> bool {
        let (layers, max_children, max_leaf) =
            (self.prefix_layers(), self.cfg.max_children, self.cfg.max_leaf_clusters);
        let mut node = self.by_length.entry(tokens.len()).or_default();
        for token in tokens.iter().take(layers) {
            node = step_down(node, token, max_children);
        }
        if node.clusters.len() >= max_leaf {
            return false;
        }
        node.clusters.push(id);
        true
    }
}

/// The child `token` leads to, made if there is room: a token with a digit,
/// or any new token once the node is nearly full, shares the `<*>` child.
fn step_down<'a>(node: &'a mut Node, token: &str, max_children: usize) -> &'a mut Node {
    let key = if node.children.contains_key(token) {
        token
    } else if token.bytes().any(|b| b.is_ascii_digit()) {
        WILDCARD
    } else {
        let n = node.children.len();
        let has_wild = node.children.contains_key(WILDCARD);
        // Keep one slot for the wildcard child.
        if (has_wild && n < max_children) || (!has_wild && n + 1 < max_children) { token } else { WILDCARD }
    };
    node.children.entry(key.to_string()).or_default()
}

/// Share of positions where `template` and `tokens` are equal (wildcards
/// not counted), and how many wildcards the template has (the tie-break).
fn similarity(template: &[String], tokens: &[String]) -> (f64, usize) {
    if template.is_empty() {
        return (1.0, 0);
    }
    let mut same = 0;
    let mut params = 0;
    for (t, s) in template.iter().zip(tokens) {
        if t == WILDCARD {
            params += 1;
        } else if t == s {
            same += 1;
        }
    }
    (same as f64 / template.len() as f64, params)
}

/// A token that is plainly a variable: a number (with a unit or sign, `412ms`,
/// `-3.5`, `99%`), a hex id of 8 or more digits, a UUID, an IPv4 address
/// (with a port), or `key=value` whose value is one of those.
pub fn is_variable(token: &str) -> bool {
    let t = token.trim_matches(|c: char| "()[]{}<>,;:\"'".contains(c));
    if let Some((_, v)) = t.split_once('=') {
        return !v.is_empty() && is_variable(v);
    }
    if t.is_empty() {
        return false;
    }
    let numeric = {
        let body = t.trim_start_matches(['-', '+', '#']);
        let digits_end = body.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(body.len());
        let (num, unit) = body.split_at(digits_end);
        num.bytes().any(|b| b.is_ascii_digit())
            && unit.len() <= 3
            && unit.bytes().all(|b| b.is_ascii_alphabetic() || b == b'%')
    };
    let hex = t.len() >= 8
        && t.bytes().any(|b| b.is_ascii_digit())
        && t.trim_start_matches("0x").bytes().all(|b| b.is_ascii_hexdigit() || b == b'-');
    let ip = t.split(':').next().is_some_and(|a| {
        let parts: Vec<&str> = a.split('.').collect();
        parts.len() == 4 && parts.iter().all(|p| !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()))
    });
    numeric || hex || ip
}

#[cfg(test)]
mod tests {
    use super::*;

    fn templates(cfg: DrainConfig, lines: &[&str]) -> (Vec<usize>, Vec<String>) {
        let mut d = Drain::new(cfg);
        let ids = lines.iter().map(|l| d.add(l).expect("room for every cluster")).collect();
        (ids, d.clusters().iter().map(Cluster::template).collect())
    }

    /// Lines in the style of the paper's HDFS and OpenStack examples.
    const LINES: [&str; 12] = [
        "Receiving block blk_-1608999687919862906 src: /10.250.19.102:54106 dest: /10.250.19.102:50010",
        "Receiving block blk_-1608999687919862906 src: /10.250.10.6:40524 dest: /10.250.10.6:50010",
        "PacketResponder 1 for block blk_38865049064139660 terminating",
        "PacketResponder 0 for block blk_-6952295868487656571 terminating",
        "Verification succeeded for blk_-4980916519894289629",
        "connected to 10.0.0.1 in 31ms",
        "connected to 10.0.0.7 in 12ms",
        "user alice logged in",
        "user bob logged in",
        "user carol logged out",
        "Deleting block blk_1781953582842324563 file /mnt/hadoop/dfs/data/current/subdir1/blk_1781953582842324563",
        "",
    ];

    #[test]
    fn the_bare_algorithm_matches_the_reference_implementation() {
        // drain3 0.9.11 (PyPI), TemplateMiner defaults (depth 4, sim_th 0.4,
        // max_children 100, no masking), the same twelve lines:
        //   from drain3 import TemplateMiner
        //   m = TemplateMiner(); ids = [m.add_log_message(l)["cluster_id"] for l in LINES]
        //   [c.get_template() for c in m.drain.clusters]
        let (ids, got) = templates(DrainConfig { mask: false, ..Default::default() }, &LINES);
        assert_eq!(ids.iter().map(|i| i + 1).collect::<Vec<_>>(), GOLDEN_IDS);
        assert_eq!(got, GOLDEN_TEMPLATES);
    }

    const GOLDEN_IDS: [usize; 12] = [1, 1, 2, 2, 3, 4, 4, 5, 5, 5, 6, 7];
    const GOLDEN_TEMPLATES: [&str; 7] = [
        "Receiving block blk_-1608999687919862906 src: <*> dest: <*>",
        "PacketResponder <*> for block <*> terminating",
        "Verification succeeded for blk_-4980916519894289629",
        "connected to <*> in <*>",
        "user <*> logged <*>",
        "Deleting block blk_1781953582842324563 file /mnt/hadoop/dfs/data/current/subdir1/blk_1781953582842324563",
        "",
    ];

    #[test]
    fn masking_folds_numbers_ids_and_addresses_before_mining() {
        let (ids, got) = templates(
            DrainConfig::default(),
            &[
                "POST /checkout 500 took 412ms order=8f14e45fceea167a5a36dedd4bea2543",
                "POST /checkout 500 took 31ms order=c9f0f895fb98ab9159f51fd0297e236d",
                "GC overhead above 40%, heap 91% used",
            ],
        );
        assert_eq!(ids, [0, 0, 1]);
        assert_eq!(got, ["POST /checkout <*> took <*> <*>", "GC overhead above <*> heap <*> used"]);
    }

    #[test]
    fn words_are_not_variables_and_variables_are() {
        for v in ["412ms", "-3.5", "99%", "0x7ffee4b3", "10.0.0.1:8080", "id=42", "(17)", "deadbeef01", "#3"] {
            assert!(is_variable(v), "{v}");
        }
        for w in ["checkout", "POST", "/api/v1", "NullPointerException", "v2beta", "id=", "timeout:", "a=b"] {
            assert!(!is_variable(w), "{w}");
        }
    }

    #[test]
    fn ids_stay_put_as_later_lines_arrive() {
        let (first, _) = templates(DrainConfig::default(), &LINES[..6]);
        let (all, _) = templates(DrainConfig::default(), &LINES);
        assert_eq!(first, all[..6]);
    }

    #[test]
    fn a_full_node_sends_new_tokens_down_the_wildcard_branch() {
        let cfg = DrainConfig { max_children: 3, ..Default::default() };
        let lines = ["alpha one", "beta one", "gamma one", "delta one"];
        let (ids, got) = templates(cfg, &lines);
        // Two children by name, then the rest share `<*>`, where similarity merges them.
        assert_eq!(ids, [0, 1, 2, 2]);
        assert_eq!(got[2], "<*> one");
    }

    /// The audit's flood: 30,000 unique one-token error lines all land in
    /// one leaf. The leaf's cap keeps each line's search bounded; the lines
    /// that fit nowhere are left unmined for the caller to count.
    #[test]
    fn a_flood_of_unique_lines_stays_bounded() {
        let mut d = Drain::new(DrainConfig::default());
        let mined = (0..30_000).filter(|n| d.add(&format!("err{n}x")).is_some()).count();
        assert_eq!(mined, DrainConfig::default().max_leaf_clusters);
        assert!(d.clusters().len() <= DrainConfig::default().max_clusters);
        // An ordinary line still finds (or makes) its own cluster.
        assert!(d.add("NullPointerException in CartPricing.apply").is_some());
    }
}
