//! How large and how long each benchmark runs. `quick` keeps the harness
//! working in CI within a couple of minutes; `full` is the profile whose
//! results are published.

use clap::ValueEnum;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProfileName {
    Quick,
    Full,
}

#[derive(Debug, Clone)]
pub struct Profile {
    pub name: ProfileName,
    /// B1: idle connections held by one server process.
    pub idle_connections: usize,
    /// B1: idle connections spread over `spread_processes` runtime
    /// processes; none in the quick profile.
    pub spread_connections: usize,
    pub spread_processes: usize,
    /// B2: members per room, one benchmark step series per size.
    pub room_sizes: Vec<usize>,
    /// B2: length of one offered-rate step, in seconds.
    pub step_seconds: f64,
    /// B3: length of the paced run at half of capacity, in seconds.
    pub latency_seconds: f64,
    /// B4: length of each REST load level, in seconds.
    pub rest_seconds: f64,
    /// B5: clients dropped and reconnected at once.
    pub storm_clients: usize,
    /// B6: clients in rooms of 100, of which 1 % stop reading.
    pub slow_test_clients: usize,
    /// B6: length of each phase, in seconds.
    pub slow_seconds: f64,
    /// B7: length of the soak, in seconds, and the clients churning in it.
    pub soak_seconds: f64,
    pub soak_clients: usize,
    /// B8: tenant counts to apply at once.
    pub operator_tenants: Vec<usize>,
    /// B8: how long to count operator writes after every tenant is Ready.
    pub steady_state_seconds: f64,
}

impl Profile {
    pub fn new(name: ProfileName) -> Profile {
        match name {
            ProfileName::Quick => Profile {
                name,
                idle_connections: 500,
                spread_connections: 0,
                spread_processes: 6,
                room_sizes: vec![10, 100],
                step_seconds: 1.0,
                latency_seconds: 2.0,
                rest_seconds: 1.0,
                storm_clients: 300,
                slow_test_clients: 200,
                slow_seconds: 2.0,
                soak_seconds: 10.0,
                soak_clients: 100,
                operator_tenants: vec![1, 10],
                steady_state_seconds: 5.0,
            },
            ProfileName::Full => Profile {
                name,
                idle_connections: 10_000,
                spread_connections: 100_000,
                spread_processes: 6,
                room_sizes: vec![10, 100, 1_000, 10_000],
                step_seconds: 3.0,
                latency_seconds: 30.0,
                rest_seconds: 10.0,
                storm_clients: 10_000,
                slow_test_clients: 2_000,
                slow_seconds: 20.0,
                soak_seconds: 1_800.0,
                soak_clients: 2_000,
                operator_tenants: vec![1, 1_000],
                steady_state_seconds: 60.0,
            },
        }
    }

    pub fn label(&self) -> &'static str {
        match self.name {
            ProfileName::Quick => "quick",
            ProfileName::Full => "full",
        }
    }
}
