#![doc = include_str!("../README.md")]
//! lossconf: a specification-driven conformance suite for loss functions.
//!
//! See `README.md` and `docs/DESIGN.md` for the data flow: specs -> cases -> trials.

pub mod accuracy;
pub mod backend;
pub mod bench;
pub mod reference;
pub mod tensor;

pub use backend::{Backend, Call, CallError, ErrorKind, Outcome, Value};
pub use tensor::{DType, Tensor};
pub mod case;
pub mod generate;
pub mod gradcheck;
pub mod spec;

pub mod compare;
pub mod harness;

pub use harness::Harness;
pub mod process;
pub mod protocol;
pub mod report;
pub mod summary;
