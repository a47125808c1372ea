mod cli;
mod haproxy;
mod ledger;
mod orchestrator;
mod prometheus;
mod report;
mod snapshots;
mod watch;
