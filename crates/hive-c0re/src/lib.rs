//! hive-c0re: the host daemon of hyperhive and the operator's CLI.
//!
//! `serve` owns the state (the [`store`]), starts and watches agents through a
//! [`runtime`], and serves host.sock ([`host_sock`]), one agent.sock per agent
//! ([`agent_sock`], served by [`agent_conn`]) and the dashboard. Every other verb is a client of host.sock.

pub mod admission;
pub mod agent_conn;
pub mod agent_sock;
pub mod api_health;
pub mod blocking;
pub mod broker;
pub mod cli;
pub mod clock;
pub mod config_repo;
pub mod daemon;
pub mod dashboard;
pub mod doctor;
pub mod error;
pub mod harness_log;
pub mod hex;
pub mod hive;
pub mod host_sock;
pub mod lines;
pub mod login;
pub mod manager;
pub mod node_shell;
pub mod panics;
pub mod paths;
pub mod procfs;
pub mod runtime;
pub mod sd_notify;
pub mod serve_config;
pub mod shell;
pub mod space;
pub mod store;
pub mod supervisor;
pub mod throttle;
pub mod tls;
pub mod webhooks;
