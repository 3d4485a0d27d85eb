//! `hive-m1nd`: the manager's harness — the agent turn loop with the manager's MCP tools on.

fn main() {
    hive_ag3nt::cli::main("hive-m1nd", true)
}
