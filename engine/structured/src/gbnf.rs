//! GBNF (llama.cpp grammar) support: vLLM's `guided_grammar` and
//! `structured_outputs.grammar` accept either llguidance's Lark dialect or llama.cpp's GBNF,
//! but llguidance only compiles Lark. [`is_gbnf`] tells the two apart and [`gbnf_to_lark`]
//! rewrites GBNF into Lark the way llguidance's `python/llguidance/gbnf_to_lark.py` (which
//! vLLM uses) does, so a grammar constrains output here as it would under vLLM.
//! Std only: the caller hands the resulting Lark text to llguidance.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;

/// First line of every converted grammar (llguidance's grammar-options block, defaults).
const LARK_HEADER: &str = "%llguidance {}\n\n";
/// Separator between the top-level alternatives of a rule, one per line as in the Python.
const TOP_ALTERNATIVE_SEPARATOR: &str = "\n     | ";
/// Lark spelling of GBNF's `.`: any character, newline included (`s` flag).
const ANY_CHAR_REGEX: &str = "/./s";
/// Largest repetition count Lark accepts (it reads counts as `i32`; `i32::MAX` means unbounded).
const MAX_REPEAT_COUNT: u32 = i32::MAX as u32 - 1;
/// How many characters of source an error message quotes.
const ERROR_CONTEXT_CHARS: usize = 20;
/// Deepest `(...)` nesting accepted; the parser recurses per level, so request-supplied
/// grammars must not be able to exhaust the stack.
const MAX_GROUP_DEPTH: usize = 256;

/// True when `grammar` is GBNF (has a `::=` rule definition outside strings/comments)
/// rather than Lark.
///
/// A GBNF rule definition always starts a line (`name ::= ...`, optionally indented), so a
/// line-start check never sees `::=` inside a single-line string or a `#`/`//` comment.
pub fn is_gbnf(grammar: &str) -> bool {
    grammar.lines().any(is_rule_definition_line)
}

/// Converts a GBNF grammar to llguidance's Lark dialect.
///
/// `root` becomes `start`, `name ::= ...` becomes `name: ...`, `-` in rule names becomes `_`
/// and camelCase becomes snake_case; rules built only from literals, classes and other such
/// rules become Lark terminals (upper-case names), as in the Python converter. Character
/// classes `[...]` become regexes `/[...]/`, `.` any character (newline included), strings
/// are re-escaped for Lark (GBNF's `\xNN`, `\uNNNN`, `\UNNNNNNNN` decoded first);
/// repetition `{m}`, `{m,}`, `{m,n}`, `*`, `+`, `?`, grouping, alternation, rules continued
/// over several lines (inside parentheses, after `|` or after `::=`) are kept, and `#`
/// comments become `//` comments above their rule. A rule defined twice keeps its last
/// definition, as in llama.cpp.
///
/// # Errors
/// A message naming the line and what is wrong: an unterminated string or character class,
/// a bad escape, a missing `::=`, an unclosed `(`, an empty class `[]`, a reversed range
/// `[z-a]` or repetition `{3,1}`, a reference to an undefined rule, two rule names that map
/// to one Lark name; or a message saying the grammar has no `root` rule.
pub fn gbnf_to_lark(grammar: &str) -> Result<String, String> {
    let rules = Parser::new(grammar).parse_grammar()?;
    Ok(LarkGrammar::resolve(rules)?.render())
}

fn is_rule_definition_line(line: &str) -> bool {
    let rest = line.trim_start();
    let name_len = rest.find(|c: char| !is_word_char(c)).unwrap_or(rest.len());
    name_len > 0
        && rest[name_len..]
            .trim_start_matches([' ', '\t'])
            .starts_with("::=")
}

fn is_word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '-' || c == '_'
}

// ---------------------------------------------------------------------------------------------
// Syntax tree
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
enum Node {
    /// A string literal, escapes already decoded.
    Literal(String),
    /// A character class with at least one range.
    Class(CharClass),
    /// `.` (or `[^]`): any single character.
    AnyChar,
    /// A reference to another rule, by its GBNF name.
    Ref(RuleRef),
    Repeat(Box<Node>, u32, Option<u32>),
    Sequence(Vec<Node>),
    Alternatives(Vec<Node>),
}

#[derive(Debug, Clone, PartialEq)]
struct RuleRef {
    name: String,
    line: usize,
}

#[derive(Debug, Clone, PartialEq)]
struct CharClass {
    negated: bool,
    /// Inclusive ranges, decoded; a single character is `(c, c)`.
    ranges: Vec<(char, char)>,
}

#[derive(Debug, Clone, PartialEq)]
struct Rule {
    name: String,
    body: Node,
    /// `#` comments read since the previous rule, as Lark `//` comment lines.
    comments: Vec<String>,
    line: usize,
}

/// Wraps `nodes` with `wrap` unless there is exactly one, which stands for itself.
fn collapse(mut nodes: Vec<Node>, wrap: fn(Vec<Node>) -> Node) -> Node {
    if nodes.len() == 1
        && let Some(node) = nodes.pop()
    {
        return node;
    }
    wrap(nodes)
}

// ---------------------------------------------------------------------------------------------
// Parser (mirrors `GrammarParser` in gbnf_to_lark.py and llama.cpp's grammar parser)
// ---------------------------------------------------------------------------------------------

struct Parser {
    chars: Vec<char>,
    /// Indices in `chars` of every `\n`, for line numbers in messages.
    newlines: Vec<usize>,
    pos: usize,
    group_depth: usize,
    pending_comments: Vec<String>,
}

impl Parser {
    fn new(text: &str) -> Self {
        let chars: Vec<char> = text.chars().collect();
        let newlines = chars
            .iter()
            .enumerate()
            .filter(|&(_, &c)| c == '\n')
            .map(|(i, _)| i)
            .collect();
        Self {
            chars,
            newlines,
            pos: 0,
            group_depth: 0,
            pending_comments: Vec::new(),
        }
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn peek_at(&self, offset: usize) -> Option<char> {
        self.chars.get(self.pos + offset).copied()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += 1;
        Some(c)
    }

    fn eat(&mut self, expected: char) -> bool {
        let found = self.peek() == Some(expected);
        if found {
            self.pos += 1;
        }
        found
    }

    fn eat_str(&mut self, expected: &str) -> bool {
        let n = expected.chars().count();
        let found = self
            .chars
            .get(self.pos..self.pos + n)
            .is_some_and(|s| s.iter().copied().eq(expected.chars()));
        if found {
            self.pos += n;
        }
        found
    }

    /// Consumes one `\n`, `\r\n` or `\r`; false when not at a line break.
    fn eat_newline(&mut self) -> bool {
        if self.eat('\r') {
            self.eat('\n');
            true
        } else {
            self.eat('\n')
        }
    }

    fn line_at(&self, pos: usize) -> usize {
        self.newlines.partition_point(|&newline| newline < pos) + 1
    }

    fn error_at(&self, pos: usize, message: &str) -> String {
        let line = self.line_at(pos);
        let context: String = self
            .chars
            .get(pos..)
            .unwrap_or_default()
            .iter()
            .take_while(|&&c| c != '\n' && c != '\r')
            .take(ERROR_CONTEXT_CHARS)
            .collect();
        if context.is_empty() {
            format!("GBNF line {line}: {message}")
        } else {
            format!("GBNF line {line}: {message} (at {context:?})")
        }
    }

    fn error(&self, message: &str) -> String {
        self.error_at(self.pos, message)
    }

    /// Skips blanks and `#` comments (collected for the next rule); line breaks only when
    /// `newlines` is set, since outside parentheses a line break ends the rule.
    fn skip_space(&mut self, newlines: bool) {
        while let Some(c) = self.peek() {
            match c {
                ' ' | '\t' => self.pos += 1,
                '\r' | '\n' if newlines => self.pos += 1,
                '#' => self.skip_comment(),
                _ => break,
            }
        }
    }

    fn skip_comment(&mut self) {
        self.pos += 1;
        let mut comment = String::from("//");
        while let Some(c) = self.peek().filter(|&c| c != '\r' && c != '\n') {
            comment.push(c);
            self.pos += 1;
        }
        self.pending_comments.push(comment);
    }

    fn parse_grammar(mut self) -> Result<Vec<Rule>, String> {
        let mut rules: Vec<Rule> = Vec::new();
        let mut index: HashMap<String, usize> = HashMap::new();
        self.skip_space(true);
        while self.peek().is_some() {
            let rule = self.parse_rule()?;
            match index.get(&rule.name) {
                Some(&i) => rules[i] = rule,
                None => {
                    index.insert(rule.name.clone(), rules.len());
                    rules.push(rule);
                }
            }
            self.skip_space(true);
        }
        Ok(rules)
    }

    fn parse_rule(&mut self) -> Result<Rule, String> {
        let line = self.line_at(self.pos);
        let name = self.parse_name("expected a rule name")?;
        self.skip_space(false);
        if !self.eat_str("::=") {
            return Err(self.error(&format!("expected `::=` after rule name `{name}`")));
        }
        self.skip_space(true);
        let body = self.parse_alternatives(false)?;
        if !self.eat_newline()
            && let Some(c) = self.peek()
        {
            let what = if c == ')' {
                "unmatched `)`".to_string()
            } else {
                format!("unexpected {c:?}")
            };
            return Err(self.error(&format!("{what} in rule `{name}`")));
        }
        let comments = std::mem::take(&mut self.pending_comments);
        Ok(Rule {
            name,
            body,
            comments,
            line,
        })
    }

    fn parse_name(&mut self, missing: &str) -> Result<String, String> {
        let start = self.pos;
        while self.peek().is_some_and(is_word_char) {
            self.pos += 1;
        }
        if self.pos == start {
            return Err(self.error(missing));
        }
        Ok(self.chars[start..self.pos].iter().collect())
    }

    fn parse_alternatives(&mut self, nested: bool) -> Result<Node, String> {
        let mut alternatives = vec![self.parse_sequence(nested)?];
        loop {
            self.skip_space(nested);
            if !self.eat('|') {
                break;
            }
            self.skip_space(true);
            alternatives.push(self.parse_sequence(nested)?);
        }
        Ok(collapse(alternatives, Node::Alternatives))
    }

    fn parse_sequence(&mut self, nested: bool) -> Result<Node, String> {
        let mut nodes = Vec::new();
        while let Some(c) = self.peek() {
            let node = match c {
                '"' => self.parse_literal()?,
                '[' => self.parse_class()?,
                '(' => self.parse_group(nested)?,
                '.' => {
                    self.pos += 1;
                    Node::AnyChar
                }
                c if is_word_char(c) => {
                    let line = self.line_at(self.pos);
                    let name = self.parse_name("expected a rule name")?;
                    Node::Ref(RuleRef { name, line })
                }
                _ => break,
            };
            self.skip_space(nested);
            let node = self.parse_repetition(node)?;
            self.skip_space(nested);
            nodes.push(node);
        }
        Ok(collapse(nodes, Node::Sequence))
    }

    fn parse_group(&mut self, nested: bool) -> Result<Node, String> {
        let open = self.pos;
        if self.group_depth >= MAX_GROUP_DEPTH {
            let message = format!("groups nested more than {MAX_GROUP_DEPTH} deep");
            return Err(self.error_at(open, &message));
        }
        self.pos += 1;
        self.skip_space(true);
        self.group_depth += 1;
        let inner = self.parse_alternatives(true);
        self.group_depth -= 1;
        let inner = inner?;
        if !self.eat(')') {
            let line = self.line_at(open);
            return Err(self.error(&format!(
                "expected `)` to close the `(` opened on line {line}"
            )));
        }
        self.skip_space(nested);
        Ok(inner)
    }

    fn parse_repetition(&mut self, node: Node) -> Result<Node, String> {
        let open = self.pos;
        let (min, max) = match self.peek() {
            Some('*') => (0, None),
            Some('+') => (1, None),
            Some('?') => (0, Some(1)),
            Some('{') => {
                self.pos += 1;
                let (min, max) = self.parse_braced_counts()?;
                if let Some(max) = max
                    && max < min
                {
                    let message = format!("repetition maximum {max} is smaller than minimum {min}");
                    return Err(self.error_at(open, &message));
                }
                return Ok(Node::Repeat(Box::new(node), min, max));
            }
            _ => return Ok(node),
        };
        self.pos += 1;
        Ok(Node::Repeat(Box::new(node), min, max))
    }

    /// Parses `m}`, `m,}` or `m,n}` (after the `{`).
    fn parse_braced_counts(&mut self) -> Result<(u32, Option<u32>), String> {
        self.skip_space(true);
        let min = self.parse_count()?;
        self.skip_space(true);
        if self.eat('}') {
            return Ok((min, Some(min)));
        }
        if !self.eat(',') {
            return Err(self.error("expected `,` or `}` in repetition count"));
        }
        self.skip_space(true);
        let max = if self.peek().is_some_and(|c| c.is_ascii_digit()) {
            Some(self.parse_count()?)
        } else {
            None
        };
        self.skip_space(true);
        if !self.eat('}') {
            return Err(self.error("expected `}` to close repetition count"));
        }
        Ok((min, max))
    }

    fn parse_count(&mut self) -> Result<u32, String> {
        let start = self.pos;
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.pos += 1;
        }
        if self.pos == start {
            return Err(self.error("expected a repetition count"));
        }
        let digits: String = self.chars[start..self.pos].iter().collect();
        match digits.parse::<u32>() {
            Ok(n) if n <= MAX_REPEAT_COUNT => Ok(n),
            _ => Err(self.error_at(start, &format!("repetition count {digits} is too large"))),
        }
    }

    fn parse_literal(&mut self) -> Result<Node, String> {
        let open = self.pos;
        self.pos += 1;
        let mut text = String::new();
        loop {
            match self.peek() {
                None | Some('\n' | '\r') => {
                    return Err(self.error_at(open, "unterminated string literal"));
                }
                Some('"') => {
                    self.pos += 1;
                    return Ok(Node::Literal(text));
                }
                Some(_) => text.push(self.parse_char()?),
            }
        }
    }

    fn parse_class(&mut self) -> Result<Node, String> {
        let open = self.pos;
        self.pos += 1;
        let negated = self.eat('^');
        let mut ranges = Vec::new();
        loop {
            match self.peek() {
                None | Some('\n' | '\r') => {
                    return Err(self.error_at(open, "unterminated character class"));
                }
                Some(']') => {
                    self.pos += 1;
                    break;
                }
                Some(_) => {
                    let range_start = self.pos;
                    let lo = self.parse_char()?;
                    let hi =
                        if self.peek() == Some('-') && self.peek_at(1).is_some_and(|c| c != ']') {
                            self.pos += 1;
                            if matches!(self.peek(), Some('\n' | '\r')) {
                                return Err(self.error_at(open, "unterminated character class"));
                            }
                            self.parse_char()?
                        } else {
                            lo
                        };
                    if hi < lo {
                        let message =
                            format!("invalid character range {lo:?}-{hi:?} (end before start)");
                        return Err(self.error_at(range_start, &message));
                    }
                    ranges.push((lo, hi));
                }
            }
        }
        match (ranges.is_empty(), negated) {
            (true, true) => Ok(Node::AnyChar),
            (true, false) => Err(self.error_at(open, "empty character class `[]` matches nothing")),
            (false, _) => Ok(Node::Class(CharClass { negated, ranges })),
        }
    }

    /// Reads one character of a string or class, decoding GBNF escapes.
    fn parse_char(&mut self) -> Result<char, String> {
        let start = self.pos;
        let Some(c) = self.bump() else {
            return Err(self.error("unexpected end of input"));
        };
        if c != '\\' {
            return Ok(c);
        }
        match self.bump() {
            None => Err(self.error_at(start, "incomplete escape sequence")),
            Some('"') => Ok('"'),
            Some('\\') => Ok('\\'),
            Some('[') => Ok('['),
            Some(']') => Ok(']'),
            Some('n') => Ok('\n'),
            Some('r') => Ok('\r'),
            Some('t') => Ok('\t'),
            Some('x') => self.parse_hex_escape(start, 'x', 2),
            Some('u') => self.parse_hex_escape(start, 'u', 4),
            Some('U') => self.parse_hex_escape(start, 'U', 8),
            Some(other) => {
                Err(self.error_at(start, &format!("invalid escape sequence `\\{other}`")))
            }
        }
    }

    fn parse_hex_escape(
        &mut self,
        start: usize,
        kind: char,
        digits: usize,
    ) -> Result<char, String> {
        let hex: String = self
            .chars
            .get(self.pos..self.pos + digits)
            .unwrap_or_default()
            .iter()
            .collect();
        let value = if hex.chars().all(|c| c.is_ascii_hexdigit()) && hex.chars().count() == digits {
            u32::from_str_radix(&hex, 16).ok()
        } else {
            None
        };
        let Some(value) = value else {
            let message = format!("invalid `\\{kind}` escape: expected {digits} hex digits");
            return Err(self.error_at(start, &message));
        };
        self.pos += digits;
        char::from_u32(value).ok_or_else(|| {
            self.error_at(
                start,
                &format!("`\\{kind}{hex}` is not a valid Unicode scalar value"),
            )
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Resolution and Lark output (mirrors `resolve` and `gbnf_to_lark` in gbnf_to_lark.py)
// ---------------------------------------------------------------------------------------------

struct LarkGrammar {
    rules: Vec<Rule>,
    /// GBNF rule name -> Lark name.
    lark_names: HashMap<String, String>,
}

impl LarkGrammar {
    fn resolve(rules: Vec<Rule>) -> Result<Self, String> {
        let defined: HashSet<&str> = rules.iter().map(|r| r.name.as_str()).collect();
        for rule in &rules {
            check_references(&rule.body, &rule.name, &defined)?;
        }
        if !defined.contains("root") {
            return Err(
                "GBNF grammar has no `root` rule (the grammar starts at `root ::= ...`)"
                    .to_string(),
            );
        }
        let terminals = terminal_rules(&rules);
        let lark_names = assign_lark_names(&rules, &terminals)?;
        Ok(Self { rules, lark_names })
    }

    fn render(&self) -> String {
        let mut out = String::from(LARK_HEADER);
        let mut previous_multiline = true;
        for rule in &self.rules {
            let text = self.rule_text(rule);
            let multiline = text.contains('\n');
            if multiline && !previous_multiline {
                out.push('\n');
            }
            out.push_str(&text);
            out.push('\n');
            if multiline {
                out.push('\n');
            }
            previous_multiline = multiline;
        }
        out
    }

    fn rule_text(&self, rule: &Rule) -> String {
        let mut text = String::new();
        for comment in &rule.comments {
            text.push_str(comment);
            text.push('\n');
        }
        text.push_str(self.lark_name(&rule.name));
        text.push_str(": ");
        match &rule.body {
            Node::Alternatives(alternatives) => {
                let parts: Vec<String> = alternatives.iter().map(|a| self.expr(a)).collect();
                text.push_str(&parts.join(TOP_ALTERNATIVE_SEPARATOR));
            }
            body => text.push_str(&self.expr(body)),
        }
        text
    }

    fn lark_name<'a>(&'a self, gbnf_name: &'a str) -> &'a str {
        self.lark_names
            .get(gbnf_name)
            .map_or(gbnf_name, String::as_str)
    }

    fn expr(&self, node: &Node) -> String {
        match node {
            Node::Literal(text) => lark_string(text),
            Node::Class(class) => format!("/{}/", class_regex(class)),
            Node::AnyChar => ANY_CHAR_REGEX.to_string(),
            Node::Ref(reference) => self.lark_name(&reference.name).to_string(),
            Node::Repeat(inner, min, max) => self.repeat_expr(inner, *min, *max),
            Node::Sequence(nodes) if nodes.is_empty() => "\"\"".to_string(),
            Node::Sequence(nodes) => nodes
                .iter()
                .map(|n| self.expr(n))
                .collect::<Vec<_>>()
                .join(" "),
            Node::Alternatives(nodes) => {
                format!(
                    "({})",
                    nodes
                        .iter()
                        .map(|n| self.expr(n))
                        .collect::<Vec<_>>()
                        .join(" | ")
                )
            }
        }
    }

    fn repeat_expr(&self, inner: &Node, min: u32, max: Option<u32>) -> String {
        if max == Some(0) {
            // `x{0}` matches only the empty string; Lark rejects a range ending at 0.
            return "\"\"".to_string();
        }
        let mut text = self.expr(inner);
        if matches!(inner, Node::Sequence(_) | Node::Repeat(..)) {
            text = format!("({text})");
        }
        match (min, max) {
            (0, None) => text.push('*'),
            (1, None) => text.push('+'),
            (0, Some(1)) => text.push('?'),
            (min, None) => {
                let _ = write!(text, "{{{min},}}");
            }
            (min, Some(max)) if min == max => {
                let _ = write!(text, "{{{min}}}");
            }
            (min, Some(max)) => {
                let _ = write!(text, "{{{min},{max}}}");
            }
        }
        text
    }
}

fn check_references(node: &Node, rule: &str, defined: &HashSet<&str>) -> Result<(), String> {
    match node {
        Node::Ref(reference) if !defined.contains(reference.name.as_str()) => Err(format!(
            "GBNF line {}: rule `{rule}` refers to undefined rule `{}`",
            reference.line, reference.name
        )),
        Node::Repeat(inner, ..) => check_references(inner, rule, defined),
        Node::Sequence(nodes) | Node::Alternatives(nodes) => nodes
            .iter()
            .try_for_each(|n| check_references(n, rule, defined)),
        _ => Ok(()),
    }
}

/// Rules (other than `root`) that only match text through literals, classes and other
/// terminal rules: Lark terminals. This is the least fixpoint the Python converter iterates
/// to (so rules on a reference cycle never qualify), computed by propagating from rules
/// without references, in time linear in the number of references.
fn terminal_rules(rules: &[Rule]) -> HashSet<String> {
    let mut unresolved: HashMap<&str, usize> = HashMap::new();
    let mut referrers: HashMap<&str, Vec<&str>> = HashMap::new();
    for rule in rules {
        let mut referenced = HashSet::new();
        collect_references(&rule.body, &mut referenced);
        unresolved.insert(&rule.name, referenced.len());
        for target in referenced {
            referrers.entry(target).or_default().push(&rule.name);
        }
    }
    let mut ready: Vec<&str> = unresolved
        .iter()
        .filter(|&(name, &count)| count == 0 && *name != "root")
        .map(|(name, _)| *name)
        .collect();
    let mut terminals = HashSet::new();
    while let Some(name) = ready.pop() {
        terminals.insert(name.to_string());
        for &referrer in referrers.get(name).into_iter().flatten() {
            if let Some(count) = unresolved.get_mut(referrer) {
                *count -= 1;
                if *count == 0 && referrer != "root" {
                    ready.push(referrer);
                }
            }
        }
    }
    terminals
}

fn collect_references<'a>(node: &'a Node, out: &mut HashSet<&'a str>) {
    match node {
        Node::Ref(reference) => {
            out.insert(&reference.name);
        }
        Node::Repeat(inner, ..) => collect_references(inner, out),
        Node::Sequence(nodes) | Node::Alternatives(nodes) => {
            nodes.iter().for_each(|n| collect_references(n, out));
        }
        Node::Literal(_) | Node::Class(_) | Node::AnyChar => {}
    }
}

fn assign_lark_names(
    rules: &[Rule],
    terminals: &HashSet<String>,
) -> Result<HashMap<String, String>, String> {
    let mut names = HashMap::new();
    let mut owners: HashMap<String, &str> = HashMap::new();
    for rule in rules {
        let lark = lark_rule_name(&rule.name, terminals.contains(&rule.name));
        if !is_valid_lark_name(&lark) {
            return Err(format!(
                "GBNF line {}: rule name `{}` cannot be written in Lark (must start with a letter)",
                rule.line, rule.name
            ));
        }
        if let Some(other) = owners.insert(lark.clone(), &rule.name) {
            return Err(format!(
                "GBNF line {}: rules `{other}` and `{}` both become `{lark}` in Lark",
                rule.line, rule.name
            ));
        }
        names.insert(rule.name.clone(), lark);
    }
    Ok(names)
}

/// `root` -> `start`; otherwise `-` -> `_`, camelCase -> snake_case, upper case for terminals.
fn lark_rule_name(name: &str, terminal: bool) -> String {
    if name == "root" {
        return "start".to_string();
    }
    let mut out = String::with_capacity(name.len() + 4);
    let mut previous: Option<char> = None;
    for c in name.chars() {
        if previous.is_some_and(|p| p.is_ascii_lowercase()) && c.is_ascii_uppercase() {
            out.push('_');
        }
        out.push(if c == '-' { '_' } else { c });
        previous = Some(c);
    }
    if terminal {
        out.to_ascii_uppercase()
    } else {
        out.to_ascii_lowercase()
    }
}

/// Lark rule and terminal names: an optional `_`, then a letter.
fn is_valid_lark_name(name: &str) -> bool {
    let body = name.strip_prefix('_').unwrap_or(name);
    body.starts_with(|c: char| c.is_ascii_alphabetic())
}

/// Characters written as escapes rather than raw: controls and line/odd spaces.
fn needs_escape(c: char) -> bool {
    c.is_control() || (c.is_whitespace() && c != ' ')
}

/// A Lark (JSON-style) string literal for `text`.
fn lark_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            // Every control/space character is in the BMP, so four digits suffice.
            c if needs_escape(c) => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A regex character class (Rust `regex` syntax, as llguidance reads it) for `class`.
fn class_regex(class: &CharClass) -> String {
    let mut out = String::from("[");
    if class.negated {
        out.push('^');
    }
    for &(lo, hi) in &class.ranges {
        push_class_char(&mut out, lo);
        if hi != lo {
            out.push('-');
            push_class_char(&mut out, hi);
        }
    }
    out.push(']');
    out
}

fn push_class_char(out: &mut String, c: char) {
    match c {
        // Class syntax (`[`, `]`, `^`, `-`, `&&`, `~~`, `\`) and the Lark regex delimiter `/`.
        '\\' | '[' | ']' | '^' | '-' | '&' | '~' | '/' => {
            out.push('\\');
            out.push(c);
        }
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        c if needs_escape(c) && u32::from(c) <= 0xff => {
            let _ = write!(out, "\\x{:02X}", u32::from(c));
        }
        c if needs_escape(c) => {
            let _ = write!(out, "\\x{{{:X}}}", u32::from(c));
        }
        c => out.push(c),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use llguidance::api::TopLevelGrammar;
    use llguidance::toktrie::ApproximateTokEnv;
    use llguidance::{Matcher, ParserFactory};

    /// A matcher for `lark` over a tokenizer whose token `b` is the single byte `b`.
    fn matcher(lark: &str) -> Matcher {
        let env = ApproximateTokEnv::single_byte_env();
        let factory = ParserFactory::new_simple(&env).expect("parser factory");
        let matcher =
            Matcher::new(factory.create_parser(TopLevelGrammar::from_lark(lark.to_string())));
        assert!(
            !matcher.is_error(),
            "llguidance rejected the grammar: {:?}\n{lark}",
            matcher.get_error()
        );
        matcher
    }

    /// Whether the whole of `input` is a sentence of `lark`.
    fn accepts(lark: &str, input: &str) -> bool {
        let mut m = matcher(lark);
        let tokens: Vec<u32> = input.bytes().map(u32::from).collect();
        match m.try_consume_tokens(&tokens) {
            Ok(n) if n == tokens.len() => m.is_accepting().expect("is_accepting"),
            _ => false,
        }
    }

    fn convert(gbnf: &str) -> String {
        match gbnf_to_lark(gbnf) {
            Ok(lark) => lark,
            Err(e) => panic!("conversion failed: {e}\n{gbnf}"),
        }
    }

    fn assert_language(gbnf: &str, valid: &[&str], invalid: &[&str]) {
        let lark = convert(gbnf);
        for s in valid {
            assert!(accepts(&lark, s), "should accept {s:?}\n{lark}");
        }
        for s in invalid {
            assert!(!accepts(&lark, s), "should reject {s:?}\n{lark}");
        }
    }

    fn convert_err(gbnf: &str) -> String {
        match gbnf_to_lark(gbnf) {
            Ok(lark) => panic!("expected an error for {gbnf:?}, got\n{lark}"),
            Err(e) => e,
        }
    }

    const ARITHMETIC: &str = r#"root  ::= (expr "=" ws term "\n")+
expr  ::= term ([-+*/] term)*
term  ::= ident | num | "(" ws expr ")" ws
ident ::= [a-z] [a-z0-9_]* ws
num   ::= [0-9]+ ws
ws    ::= [ \t\n]*
"#;

    const JSON: &str = r#"root   ::= object
value  ::= object | array | string | number | ("true" | "false" | "null") ws

object ::=
  "{" ws (
            string ":" ws value
    ("," ws string ":" ws value)*
  )? "}" ws

array  ::=
  "[" ws (
            value
    ("," ws value)*
  )? "]" ws

string ::=
  "\"" (
    [^"\\\x7F\x00-\x1F] |
    "\\" (["\\bfnrt] | "u" [0-9a-fA-F]{4}) # escapes
  )* "\"" ws

number ::= ("-"? ([0-9] | [1-9] [0-9]{0,15})) ("." [0-9]+)? ([eE] [-+]? [0-9] [1-9]{0,15})? ws

# Optional space: by convention, applied in this grammar after literal chars when allowed
ws ::= | " " | "\n" [ \t]{0,20}
"#;

    const LIST: &str = r#"root ::= item+

# Excludes various line break characters
item ::= "- " [^\r\n\x0b\x0c\x85\u2028\u2029]+ "\n"
"#;

    const CHESS: &str = r#"# Specifies chess moves as a list in algebraic notation, using PGN conventions

# Force first move to "1. ", then any 1-2 digit number after, relying on model to follow the pattern
root    ::= "1. " move " " move "\n" ([1-9] [0-9]? ". " move " " move "\n")+
move    ::= (pawn | nonpawn | castle) [+#]?

# piece type, optional file/rank, optional capture, dest file & rank
nonpawn ::= [NBKQR] [a-h]? [1-8]? "x"? [a-h] [1-8]

# optional file & capture, dest file & rank, optional promotion
pawn    ::= ([a-h] "x")? [a-h] [1-8] ("=" [NBKQR])?

castle  ::= "O-O" "-O"?
"#;

    const ENGLISH: &str = r##"# note: this might be incomplete, mostly an example
root        ::= en-char+ ([ \t\n] en-char+)*
en-char     ::= letter | digit | punctuation
letter      ::= [a-zA-Z]
digit       ::= [0-9]
punctuation ::= [!"#$%&'()*+,-./:;<=>?@[\\\]^_`{|}~]
"##;

    #[test]
    fn detects_gbnf_and_lark() {
        assert!(is_gbnf(ARITHMETIC));
        assert!(is_gbnf(CHESS), "comments before the first rule");
        assert!(is_gbnf("  root::=\"a\""), "indented, no spaces around ::=");
        assert!(!is_gbnf("start: \"yes\" | \"no\"\n"));
        assert!(
            !is_gbnf("%llguidance {}\nstart: item\nitem: \"a ::= b\"\n"),
            "::= inside a string"
        );
        assert!(
            !is_gbnf("// root ::= x\n# a ::= b\nstart: \"x\"\n"),
            "::= inside comments"
        );
        assert!(!is_gbnf(""));
    }

    #[test]
    fn renders_lark_like_the_python_converter() {
        let gbnf = r#"# greeting
root ::= greeting-word " " nameList
greeting-word ::= "hi" | "hello"
nameList ::= name ("," name)*
name ::= [A-Z] [a-z]+
"#;
        let expected = r#"%llguidance {}

// greeting
start: GREETING_WORD " " NAME_LIST

GREETING_WORD: "hi"
     | "hello"

NAME_LIST: NAME ("," NAME)*
NAME: /[A-Z]/ /[a-z]/+
"#;
        assert_eq!(convert(gbnf), expected);
    }

    #[test]
    fn yes_no_choice() {
        assert_language(
            r#"root ::= "yes" | "no""#,
            &["yes", "no"],
            &["maybe", "ye", "yesno", ""],
        );
    }

    #[test]
    fn arithmetic_grammar() {
        // llama.cpp's arithmetic.gbnf with `ws` limited to blanks (see the next test for why).
        let gbnf = ARITHMETIC.replace(r"ws    ::= [ \t\n]*", r"ws    ::= [ \t]*");
        let lark = convert(&gbnf);
        assert!(
            lark.contains("start: (expr \"=\" WS term \"\\n\")+"),
            "{lark}"
        );
        assert!(lark.contains("expr: term (/[\\-+*\\/]/ term)*"), "{lark}");
        assert_language(
            &gbnf,
            &["1+2=3\n", "(a *b)= c1 \n", "x=y\nz=10\n"],
            &["1+=3\n", "=3\n", "1+2\n", "1=2", "a* b=c\n"],
        );
    }

    #[test]
    fn arithmetic_trailing_ws_terminal_is_greedy_as_in_python_converter() {
        // Like the Python converter, `ident`/`num` become terminals that end in `WS`, and
        // llguidance lexes terminals greedily: a `WS` that can match "\n" swallows the line
        // break that `root` wants next, so the unmodified llama.cpp grammar rejects its own
        // examples under llguidance (vLLM's guidance backend behaves the same).
        let lark = convert(ARITHMETIC);
        assert!(
            lark.contains("IDENT: /[a-z]/ /[a-z0-9_]/* WS\nNUM: /[0-9]/+ WS\nWS: /[ \\t\\n]/*"),
            "{lark}"
        );
        assert!(!accepts(&lark, "1+2=3\n"));
        assert!(!accepts(&lark, "1+2=3"));
    }

    #[test]
    fn json_grammar() {
        assert_language(
            JSON,
            &[
                "{}",
                r#"{"a": 1}"#,
                "{\"a\": [1, -2.5, \"x\\n\\u00e9\"], \"b\": {\"c\": true, \"d\": null}}",
                "{\n  \"k\": false\n}",
            ],
            &[
                r#"{"a": }"#,
                r#"{"a": 1,}"#,
                "[1]",
                r#"{"a": "x"#,
                "{'a': 1}",
            ],
        );
    }

    #[test]
    fn list_grammar() {
        let lark = convert(LIST);
        assert!(
            lark.contains(r"/[^\r\n\x0B\x0C\x85\x{2028}\x{2029}]/+"),
            "{lark}"
        );
        assert_language(
            LIST,
            &["- milk\n", "- eggs\n- flour, sugar\n"],
            &["milk\n", "- \n", "- a\nb\n"],
        );
    }

    #[test]
    fn chess_grammar() {
        assert_language(
            CHESS,
            &[
                "1. e4 e5\n2. Nf3 Nc6\n",
                "1. d4 d5\n2. c4 dxc4\n3. O-O-O Qxd8#\n",
            ],
            &["1. e4 e5\n", "1. e9 e5\n2. d4 d5\n", "2. e4 e5\n3. d4 d5\n"],
        );
    }

    #[test]
    fn c_like_and_japanese_grammars() {
        let c_like = r#"root ::= (declaration)*
declaration ::= dataType identifier "(" parameter? ")" "{" statement* "}"
dataType  ::= "int" ws | "float" ws | "char" ws
identifier ::= [a-zA-Z_] [a-zA-Z_0-9]*
parameter ::= dataType identifier
statement ::=
    ( identifier ws "=" ws expression ";" ) |
    ( "return" ws expression ";" )
expression ::= term (("+" | "-") term)*
term ::= identifier | [0-9]+
ws ::= ([ \t\n]+)
"#;
        assert_language(
            c_like,
            &["int main(){return 0;}", "float f(int x){y = x+1;return y;}"],
            &["int main(){return 0}", "main(){}", "int main(){return;}"],
        );
        let japanese = r#"root ::= jp-char+ ([ \t\n] jp-char+)*
jp-char ::= hiragana | katakana | cjk
hiragana ::= [ぁ-ゟ]
katakana ::= [ァ-ヿ]
cjk ::= [一-鿿]
"#;
        assert_language(
            japanese,
            &["こんにちは 世界", "カタカナ"],
            &["hello", "こんにちは  世界"],
        );
    }

    #[test]
    fn english_punctuation_class_with_escapes() {
        assert_language(
            ENGLISH,
            &[
                "Hello, world!",
                "a[b]c\\d^e-f",
                "x~y&z",
                "tab\tthen\nnewline",
            ],
            &["", "two  spaces", "caf\u{e9}", "trailing "],
        );
    }

    #[test]
    fn string_and_class_escapes() {
        let gbnf = r#"root ::= "\x41\u00e9\U0001F600" "\"q\"\\" "\[\]" "\t" [\x30-\x39] [\u4e00-\u9fff] "\n""#;
        let lark = convert(gbnf);
        assert!(
            lark.contains(r#""Aé😀" "\"q\"\\" "[]" "\t" /[0-9]/ /[一-鿿]/ "\n""#),
            "{lark}"
        );
        assert_language(
            gbnf,
            &["Aé😀\"q\"\\[]\t7中\n"],
            &["Aé😀\"q\"\\[]\ta中\n", "A"],
        );
    }

    #[test]
    fn repetition_bounds() {
        let gbnf = "root ::= [0-9]{3} \"-\" [a-z]{2,} \"-\" \"x\"{1,3} \"-\" (\"ab\"*)? \"y\"{0}\n";
        let lark = convert(gbnf);
        assert!(
            lark.contains(r#"/[0-9]/{3} "-" /[a-z]/{2,} "-" "x"{1,3} "-" ("ab"*)? """#),
            "{lark}"
        );
        assert_language(
            gbnf,
            &["123-ab-x-", "000-abc-xxx-abab"],
            &["12-ab-x-", "123-a-x-", "123-ab-xxxx-", "123-ab-x-aba"],
        );
    }

    #[test]
    fn any_char_includes_newline() {
        assert_language(
            "root ::= \"<\" . . \">\"",
            &["<ab>", "<\n\u{e9}>"],
            &["<a>", "<abc>"],
        );
        assert_language("root ::= [^]", &["x", "\n"], &["", "xy"]);
    }

    #[test]
    fn rules_span_lines_groups_and_comments() {
        let gbnf = r#"root ::= # the start
  greeting |
  farewell ( "!"
    | "?" # either
  )

greeting ::= "hi"
farewell ::= "bye"
"#;
        let lark = convert(gbnf);
        assert!(
            lark.contains(
                "// the start\n// either\nstart: GREETING\n     | FAREWELL (\"!\" | \"?\")"
            ),
            "{lark}"
        );
        assert_language(gbnf, &["hi", "bye!", "bye?"], &["bye", "hi!"]);
    }

    #[test]
    fn recursive_rules_stay_nonterminal_and_forward_references_resolve() {
        let gbnf =
            "root ::= nested\nnested ::= \"(\" nested \")\" | leaf-node\nleaf-node ::= [a-z]\n";
        let lark = convert(gbnf);
        assert!(
            lark.contains("nested: \"(\" nested \")\"\n     | LEAF_NODE"),
            "{lark}"
        );
        assert_language(gbnf, &["x", "((x))"], &["((x)", "()"]);
    }

    #[test]
    fn long_reference_chain_converts_quickly_and_stays_terminal() {
        // Defined root-first, so each rule refers to one defined after it: the Python
        // fixpoint needs one pass per rule here; the propagation is linear.
        let n = 20_000;
        let mut gbnf = String::from("root ::= r0 \"!\"\n");
        for i in 0..n - 1 {
            let _ = writeln!(gbnf, "r{i} ::= \"a\" r{}", i + 1);
        }
        let _ = writeln!(gbnf, "r{} ::= \"z\"", n - 1);
        let started = std::time::Instant::now();
        let lark = convert(&gbnf);
        assert!(
            started.elapsed().as_secs() < 5,
            "took {:?}",
            started.elapsed()
        );
        assert!(
            lark.contains("start: R0 \"!\"\nR0: \"a\" R1\n"),
            "{}",
            &lark[..200]
        );
        assert!(lark.contains(&format!("R{}: \"z\"\n", n - 1)));
    }

    #[test]
    fn later_definition_wins() {
        assert_language(
            "root ::= a\na ::= \"first\"\na ::= \"second\"\n",
            &["second"],
            &["first"],
        );
    }

    #[test]
    fn crlf_line_endings() {
        assert_language(
            "root ::= a | b\r\na ::= \"x\"\r\nb ::= \"y\"\r\n",
            &["x", "y"],
            &["xy"],
        );
    }

    #[test]
    fn empty_alternative_and_empty_group() {
        assert_language(
            "root ::= \"a\" ws \"b\"\nws ::= | \" \"\n",
            &["ab", "a b"],
            &["a  b"],
        );
        assert_language("root ::= \"a\" () \"b\"\n", &["ab"], &["a b"]);
    }

    #[test]
    fn error_unterminated_string() {
        let e = convert_err("root ::= a\na ::= \"abc\nb ::= \"x\"\n");
        assert!(
            e.contains("line 2") && e.contains("unterminated string"),
            "{e}"
        );
        let e = convert_err("root ::= \"abc");
        assert!(
            e.contains("line 1") && e.contains("unterminated string"),
            "{e}"
        );
    }

    #[test]
    fn error_unterminated_class() {
        let e = convert_err("root ::= \"a\" |\n  [a-z\n");
        assert!(
            e.contains("line 2") && e.contains("unterminated character class"),
            "{e}"
        );
        let e = convert_err("root ::= [abc\\]");
        assert!(e.contains("unterminated character class"), "{e}");
    }

    #[test]
    fn error_no_root() {
        let e = convert_err("start ::= \"a\"\n");
        assert!(e.contains("no `root` rule"), "{e}");
        assert!(convert_err("").contains("no `root` rule"));
        assert!(convert_err("# only a comment\n").contains("no `root` rule"));
    }

    #[test]
    fn error_undefined_rule() {
        let e = convert_err("root ::= a\n\na ::= \"x\" missing-rule\n");
        assert!(
            e.contains("line 3") && e.contains("undefined rule `missing-rule`"),
            "{e}"
        );
    }

    #[test]
    fn error_bad_escapes() {
        assert!(convert_err(r#"root ::= "\q""#).contains("invalid escape sequence `\\q`"));
        assert!(convert_err(r#"root ::= "\x4""#).contains("expected 2 hex digits"));
        assert!(convert_err(r#"root ::= [\u12G4]"#).contains("expected 4 hex digits"));
        assert!(
            convert_err(r#"root ::= "\UFFFFFFFF""#).contains("not a valid Unicode scalar value")
        );
        assert!(convert_err(r#"root ::= "\uD800""#).contains("not a valid Unicode scalar value"));
    }

    #[test]
    fn error_syntax() {
        let e = convert_err("root ::= \"a\"\nb = \"c\"\n");
        assert!(e.contains("line 2") && e.contains("expected `::=`"), "{e}");
        let e = convert_err("root ::= (\"a\"\n  \"b\"\n");
        assert!(
            e.contains("expected `)`") && e.contains("opened on line 1"),
            "{e}"
        );
        let e = convert_err("root ::= \"a\" )\n");
        assert!(e.contains("unmatched `)`"), "{e}");
        let e = convert_err("root ::= \"a\"{2\n");
        assert!(e.contains("expected `,` or `}`"), "{e}");
        let e = convert_err("root ::= \"a\"{3,1}\n");
        assert!(e.contains("maximum 1 is smaller than minimum 3"), "{e}");
        let e = convert_err("root ::= [z-a]\n");
        assert!(e.contains("invalid character range"), "{e}");
        let e = convert_err("root ::= []\n");
        assert!(e.contains("empty character class"), "{e}");
        let e = convert_err("root ::= \"a\"*?\n");
        assert!(e.contains("unexpected '?'"), "{e}");
    }

    #[test]
    fn error_deep_nesting_instead_of_stack_overflow() {
        let depth = 100_000;
        let gbnf = format!("root ::= {}\"a\"{}\n", "(".repeat(depth), ")".repeat(depth));
        let e = convert_err(&gbnf);
        assert!(e.contains("nested more than 256 deep"), "{e}");
        let ok = format!("root ::= {}\"a\"{}\n", "(".repeat(200), ")".repeat(200));
        assert_language(&ok, &["a"], &["aa"]);
    }

    #[test]
    fn error_name_collisions() {
        let e = convert_err("root ::= a-b a_b\na-b ::= \"x\"\na_b ::= \"y\"\n");
        assert!(e.contains("both become `A_B`"), "{e}");
        let e = convert_err("root ::= start\nstart ::= \"x\" start | \"y\"\n");
        assert!(e.contains("both become `start`"), "{e}");
        let e = convert_err("root ::= 9lives\n9lives ::= \"x\"\n");
        assert!(e.contains("cannot be written in Lark"), "{e}");
    }
}
