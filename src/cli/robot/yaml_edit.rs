//! Line-preserving edits of one top-level YAML block list (`key:` followed by `- ` items), for files
//! people also edit by hand: an item's key set, added or removed, an item appended or cut out, and every
//! other line (comments, blank lines, order, quoting, the other items) kept byte for byte.
//!
//! It reads lines, not YAML: a layout it cannot map onto items with certainty (tabs, a flow-style list, a
//! line inside the list that belongs to no item) is refused, and a value on the lines after its key is
//! never replaced. Callers check the edited text with a real parser before writing it.

/// A file as lines, with where each item of its block list is.
#[derive(Debug)]
pub struct BlockList {
    lines: Vec<String>,
    /// The list's top-level key, without its colon.
    key: String,
    /// Index of the `key:` line.
    header: usize,
    /// Line spans (start inclusive, end exclusive) of the items, in file order.
    items: Vec<(usize, usize)>,
    /// Column of the `-` of list items.
    item_indent: usize,
    /// Whether the file ends with a newline.
    final_newline: bool,
}

fn indent_of(line: &str) -> usize {
    line.len() - line.trim_start_matches(' ').len()
}

fn is_blank_or_comment(line: &str) -> bool {
    let t = line.trim_start();
    t.is_empty() || t.starts_with('#')
}

impl BlockList {
    /// The list under the top-level `key:` of `text`; the error says why its lines cannot be edited.
    pub fn parse(text: &str, key: &str) -> Result<BlockList, String> {
        let head = format!("{key}:");
        let final_newline = text.is_empty() || text.ends_with('\n');
        let lines: Vec<String> = text.lines().map(str::to_string).collect();
        if lines.iter().any(|l| l.contains('\t')) {
            return Err("it contains tabs".into());
        }
        let header = lines
            .iter()
            .position(|l| l.starts_with(&head))
            .ok_or_else(|| format!("it has no top-level `{head}` line"))?;
        let after = lines[header][head.len()..].trim();
        // `key: []` is an empty list: no lines below it are read as items.
        let empty_inline = after.starts_with("[]");
        if !(after.is_empty() || after.starts_with('#') || empty_inline) {
            return Err(format!("its `{head}` list is written inline (flow style)"));
        }
        let mut items: Vec<(usize, usize)> = Vec::new();
        let mut item_indent = None;
        let mut i = if empty_inline { lines.len() } else { header + 1 };
        while i < lines.len() {
            let line = &lines[i];
            if is_blank_or_comment(line) {
                i += 1;
                continue;
            }
            let ind = indent_of(line);
            let rest = &line[ind..];
            if !(rest.starts_with("- ") || rest == "-") {
                if ind == 0 {
                    break; // the next top-level key
                }
                return Err(format!("line {} is not part of a list item", i + 1));
            }
            match item_indent {
                None => item_indent = Some(ind),
                Some(want) if want != ind => {
                    return Err(format!("line {}: list items are indented differently", i + 1))
                }
                Some(_) => {}
            }
            let start = i;
            let mut end = i + 1;
            let mut j = i + 1;
            // The item runs while lines are indented deeper than its `-`; comments and blank lines
            // count only when a deeper line follows them.
            while j < lines.len() {
                let l = &lines[j];
                if l.trim().is_empty() || (l.trim_start().starts_with('#') && indent_of(l) > ind) {
                    j += 1;
                    continue;
                }
                if indent_of(l) > ind && !is_blank_or_comment(l) {
                    j += 1;
                    end = j;
                    continue;
                }
                break;
            }
            items.push((start, end));
            i = end;
        }
        Ok(BlockList {
            lines,
            key: key.to_string(),
            header,
            items,
            item_indent: item_indent.unwrap_or(2),
            final_newline,
        })
    }

    /// How many items the list has.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// The file's text, with the edits made.
    pub fn text(&self) -> String {
        let mut s = self.lines.join("\n");
        if self.final_newline && !self.lines.is_empty() {
            s.push('\n');
        }
        s
    }

    /// Column of the keys of item `n` (after its `- `).
    fn key_indent(&self, n: usize) -> usize {
        let (start, _) = self.items[n];
        let line = &self.lines[start];
        let after_dash = indent_of(line) + 1;
        after_dash + (line.len() - after_dash - line[after_dash..].trim_start_matches(' ').len())
    }

    /// The line of `key` in item `n`, at the item's key column.
    fn find_key(&self, n: usize, key: &str) -> Option<usize> {
        let (start, end) = self.items[n];
        let col = self.key_indent(n);
        (start..end).find(|&i| {
            let l = &self.lines[i];
            l.len() > col
                && (i == start || indent_of(l) == col)
                && l[col..].strip_prefix(key).is_some_and(|r| r.starts_with(':'))
        })
    }

    /// Set `key: value` in item `n`: the value of an existing line is replaced (a trailing comment
    /// stays), or a line is added at the end of the item. `value` is written as given (see [`quoted`]).
    pub fn set(&mut self, n: usize, key: &str, value: &str) -> Result<(), String> {
        let col = self.key_indent(n);
        match self.find_key(n, key) {
            Some(i) => {
                let line = self.lines[i].clone();
                let prefix = &line[..col + key.len() + 1];
                let rest = &line[col + key.len() + 1..];
                let comment = trailing_comment(rest);
                if rest.trim().is_empty() || rest.trim_start().starts_with('#') {
                    return Err(format!("{key:?} has its value on the following lines"));
                }
                self.lines[i] = format!("{prefix} {value}{comment}");
            }
            None => {
                let (_, end) = self.items[n];
                self.lines.insert(end, format!("{}{key}: {value}", " ".repeat(col)));
                self.shift(n, 1);
            }
        }
        Ok(())
    }

    /// Remove the line of `key` from item `n`, if there is one.
    pub fn unset(&mut self, n: usize, key: &str) -> Result<(), String> {
        let Some(i) = self.find_key(n, key) else { return Ok(()) };
        let (start, _) = self.items[n];
        if i == start {
            return Err(format!("{key:?} is on the item's first line"));
        }
        self.lines.remove(i);
        self.shift(n, -1);
        Ok(())
    }

    /// Item `n` grew or shrank by `by` lines: move its end and the items after it.
    fn shift(&mut self, n: usize, by: isize) {
        let add = |x: usize| x.checked_add_signed(by).unwrap_or(x);
        self.items[n].1 = add(self.items[n].1);
        for e in self.items.iter_mut().skip(n + 1) {
            *e = (add(e.0), add(e.1));
        }
    }

    /// Cut item `n` out, with its lines.
    pub fn remove(&mut self, n: usize) {
        let (start, end) = self.items.remove(n);
        self.lines.drain(start..end);
        let len = end - start;
        for e in self.items.iter_mut().skip(n) {
            *e = (e.0 - len, e.1 - len);
        }
    }

    /// Append an item after the last one (or right under `key:`): `item_lines` are its `key: value`
    /// lines, unindented; they are indented and the first gets the `- `.
    pub fn append(&mut self, item_lines: &[String]) {
        if let Some(line) = self.lines.get_mut(self.header) {
            let head = format!("{}:", self.key);
            if line[head.len()..].trim_start().starts_with("[]") {
                *line = head;
            }
        }
        let at = self.items.last().map_or(self.header + 1, |e| e.1);
        let pad = " ".repeat(self.item_indent);
        for (k, l) in item_lines.iter().enumerate() {
            let bullet = if k == 0 { "- " } else { "  " };
            self.lines.insert(at + k, format!("{pad}{bullet}{l}"));
        }
        self.items.push((at, at + item_lines.len()));
    }
}

/// The ` # comment` at the end of a value, if any (a `#` inside quotes is not one).
fn trailing_comment(rest: &str) -> String {
    let mut quote = None;
    let bytes = rest.as_bytes();
    for (i, c) in rest.char_indices() {
        match (quote, c) {
            (None, '"' | '\'') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (None, '#') if i > 0 && bytes[i - 1] == b' ' => {
                let start = rest[..i].trim_end().len();
                return rest[start..].to_string();
            }
            _ => {}
        }
    }
    String::new()
}

/// A YAML scalar for a value we write: double-quoted JSON string syntax, which YAML reads as written.
pub fn quoted(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "# robots of the payments team\naccounts:\n  - username: alice   # a person\n    password_hash: \"$argon2id$v=19$m=19456,t=2,p=1$AtiDFKy/+HWH5g59co7l4A$rTG/LhtG9M85V0D1kP9HmOTg6lwUgaG5u4cb4ezHZxo\"\n    groups: [team-payments]\n\n  # the pipeline's robot\n  - username: ci-payments\n    # secret kept in the CI settings\n    password_hash: \"$argon2id$v=19$m=19456,t=2,p=1$HG4NgfdJypAcW+1XN14qBg$zMZq4MFUTQBFzOnui+2IpmJex3SR8wMUs46SBiLgtNs\"\n    groups:\n      - robots\n      - ci-payments\n    robot: true        # the rules see robot: true\n  - username: old-robot\n    password_hash: '$argon2id$v=19$m=19456,t=2,p=1$ZuRLasi6TbYrIjZlFbUNAQ$OgVUjUiqjs+bKmMyjeh3Eh3uiERvHC5f1wxXessIuMU'\n    robot: true\n    disabled: true     # since the migration\n# end of file\n";

    #[test]
    fn items_are_found_with_their_own_comments_and_nothing_else() {
        let l = BlockList::parse(FILE, "accounts").unwrap();
        assert_eq!(l.items.len(), 3);
        let span = |n: usize| l.lines[l.items[n].0..l.items[n].1].join("\n");
        assert!(span(0).starts_with("  - username: alice") && span(0).ends_with("groups: [team-payments]"));
        assert!(span(1).contains("# secret kept") && !span(1).contains("# the pipeline's robot"));
        assert!(span(2).ends_with("disabled: true     # since the migration"));
        assert_eq!(l.text(), FILE, "an untouched layout gives the file back byte for byte");
    }

    #[test]
    fn keys_are_set_added_and_removed_with_their_comments_kept() {
        let mut l = BlockList::parse(FILE, "accounts").unwrap();
        l.set(2, "disabled", "false").unwrap();
        assert!(l.text().contains("    disabled: false     # since the migration\n"));
        l.unset(2, "disabled").unwrap();
        l.set(1, "disabled", "true").unwrap();
        let text = l.text();
        assert!(
            text.contains(
                "    robot: true        # the rules see robot: true\n    disabled: true\n  - username: old-robot"
            ),
            "{text}"
        );
        assert!(!text.contains("since the migration"));
        assert!(l.set(1, "groups", "[x]").is_err(), "a block value is not replaced by a line edit");
    }

    #[test]
    fn trailing_comments_are_found_outside_quotes_only() {
        assert_eq!(trailing_comment(" true   # why"), "   # why");
        assert_eq!(trailing_comment(" \"a # b\""), "");
        assert_eq!(trailing_comment(" 'x#y' # z"), " # z");
    }

    #[test]
    fn flow_style_and_odd_layouts_are_refused() {
        assert!(BlockList::parse("accounts: [{username: a, password_hash: x}]\n", "accounts").is_err());
        assert!(BlockList::parse("accounts:\n\t- username: a\n", "accounts").is_err());
        assert_eq!(BlockList::parse("accounts: []\n", "accounts").unwrap().len(), 0);
    }

    #[test]
    fn items_are_appended_and_removed_under_any_key() {
        let mut l = BlockList::parse("# mirrors\nhosts: []   # none yet\nport: 5000\n", "hosts").unwrap();
        l.append(&["name: \"a\"".into(), "weight: 1".into()]);
        l.append(&["name: \"b\"".into()]);
        assert_eq!(l.text(), "# mirrors\nhosts:\n  - name: \"a\"\n    weight: 1\n  - name: \"b\"\nport: 5000\n");
        l.remove(0);
        l.set(0, "weight", "2").unwrap();
        assert_eq!(l.text(), "# mirrors\nhosts:\n  - name: \"b\"\n    weight: 2\nport: 5000\n");
        assert!(BlockList::parse("accounts:\n", "hosts").unwrap_err().contains("`hosts:`"));
        assert_eq!(quoted("a \"b\""), r#""a \"b\"""#);
    }
}
