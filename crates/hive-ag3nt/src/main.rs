//! `hive-ag3nt`: the agent harness binary.

fn main() {
    hive_ag3nt::cli::main("hive-ag3nt", false)
}
