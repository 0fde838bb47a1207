//! The guides in `docs/`, included here so that `cargo test` compiles and runs their code.

#[doc = include_str!("../../README.md")]
pub mod readme {}

#[doc = include_str!("../../docs/getting-started.md")]
pub mod getting_started {}

#[doc = include_str!("../../docs/architecture.md")]
pub mod architecture {}

#[doc = include_str!("../../docs/reliability.md")]
pub mod reliability {}

#[doc = include_str!("../../docs/storage.md")]
pub mod storage {}

#[doc = include_str!("../../docs/security.md")]
pub mod security {}

#[doc = include_str!("../../docs/testing-with-mocks.md")]
pub mod testing_with_mocks {}

#[doc = include_str!("../../docs/cli.md")]
pub mod cli {}

#[doc = include_str!("../../docs/adapters.md")]
pub mod adapters {}

/// One page per platform.
pub mod platforms {
    #[doc = include_str!("../../docs/platforms/x.md")]
    pub mod x {}

    #[doc = include_str!("../../docs/platforms/youtube.md")]
    pub mod youtube {}
}
