//! troupe's integration tests: one binary, real services started by `support`.

mod support;

mod actors;
mod agents;
mod config;
mod crons;
mod daemon;
mod faults;
mod faults_model;
mod faults_runs;
mod generations;
mod ingress;
mod ingress_bounds;
mod ingress_load;
mod limits;
mod many_daemons;
mod models;
mod operate;
mod pools;
mod rag;
mod rag_bounds;
mod store;
mod threads;
mod tools;
mod workflows;
