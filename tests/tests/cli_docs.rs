//! docs/cli.md is the CLI reference: every command `ballast --help` knows is in its
//! table of commands and has a section, and every option of a command is named in
//! that command's section. A command or flag added without its docs fails here.

use clap::CommandFactory;

fn root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Every leaf command with its path (`repo prune`) and its own long options.
fn commands(cmd: &clap::Command, path: &str, out: &mut Vec<(String, Vec<String>)>) {
    let subs: Vec<_> = cmd
        .get_subcommands()
        .filter(|s| s.get_name() != "help")
        .collect();
    if subs.is_empty() {
        let longs = cmd
            .get_arguments()
            .filter(|a| !a.is_global_set() && !a.is_hide_set())
            .filter_map(|a| a.get_long().map(String::from))
            .filter(|l| l != "help" && l != "version")
            .collect();
        out.push((path.trim().to_string(), longs));
    }
    for s in subs {
        commands(s, &format!("{path} {}", s.get_name()), out);
    }
}

/// Whether `text` names the option `--long` (not only a longer one, as `--to-time`
/// is not `--to`).
fn names_option(text: &str, long: &str) -> bool {
    let flag = format!("--{long}");
    text.match_indices(&flag).any(|(i, _)| {
        !text[i + flag.len()..]
            .starts_with(|c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    })
}

/// The heading's anchor, as GitHub makes it.
fn anchor(heading: &str) -> String {
    heading
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// The sections of the reference, keyed by every command path their heading names
/// (`### plugin list | info` names `plugin list` and `plugin info`).
fn sections(text: &str) -> Vec<(Vec<String>, String)> {
    let mut out: Vec<(Vec<String>, String)> = Vec::new();
    let mut fenced = false;
    for line in text.lines() {
        if line.starts_with("```") {
            fenced = !fenced;
        }
        if let Some(h) = line.strip_prefix('#').filter(|_| !fenced) {
            let h = h.trim_start_matches('#').trim().replace('`', "");
            let parts: Vec<&str> = h.split(" | ").collect();
            let first: Vec<&str> = parts[0].split_whitespace().collect();
            let mut names = vec![parts[0].to_string(), format!("#{}", anchor(&h))];
            if let Some((_, prefix)) = first.split_last() {
                for alt in &parts[1..] {
                    names.push(format!("{} {}", prefix.join(" "), alt.trim()));
                }
            }
            out.push((names, String::new()));
        } else if let Some((_, body)) = out.last_mut() {
            body.push_str(line);
            body.push('\n');
        }
    }
    out
}

#[test]
fn the_cli_reference_names_every_command_and_option() {
    let text = std::fs::read_to_string(root().join("docs/cli.md")).unwrap();
    let mut cmd = ballast::cli::Cli::command();
    cmd.build();
    let mut all = Vec::new();
    commands(&cmd, "", &mut all);
    assert!(all.len() > 20, "found {} commands", all.len());
    let sections = sections(&text);
    let mut missing = Vec::new();
    for (path, longs) in &all {
        if !text.contains(&format!("[`{path}`]")) {
            missing.push(format!("`{path}` is not in the table of commands"));
        }
        let Some((_, body)) = sections.iter().find(|(names, _)| names.contains(path)) else {
            missing.push(format!("`{path}` has no section"));
            continue;
        };
        // Options may be described in a section the command's section links to.
        let mut text = body.clone();
        for (names, linked) in &sections {
            if names
                .iter()
                .any(|n| n.starts_with('#') && body.contains(&format!("({n})")))
            {
                text.push_str(linked);
            }
        }
        for l in longs {
            if !names_option(&text, l) {
                missing.push(format!("`{path} --{l}` is not in its section"));
            }
        }
    }
    assert!(missing.is_empty(), "docs/cli.md:\n{}", missing.join("\n"));
}
