{
  description = "dbt-automation-demo: the project's shell, with Python packages from uv.lock";

  # nixpkgs is the only input, so flake.lock holds the only pin outside uv.lock.
  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-25.11";

  outputs =
    { self, nixpkgs }:
    let
      systems = [
        "x86_64-linux"
        "aarch64-linux"
        "x86_64-darwin"
        "aarch64-darwin"
      ];
      forAllSystems = f: nixpkgs.lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});
    in
    {
      devShells = forAllSystems (
        pkgs:
        let
          # The oldest Python pyproject's requires-python admits, as the images (a test checks).
          python = pkgs.python311;
        in
        {
          default = pkgs.mkShell {
            packages = [
              python
              pkgs.uv
              python.pkgs.nox
              pkgs.pre-commit
              pkgs.duckdb
              # The tests start PostgreSQL servers of their own (instance storage on PostgreSQL).
              pkgs.postgresql
            ];
            env = {
              UV_PYTHON = "${python}/bin/python3.11";
              UV_PYTHON_DOWNLOADS = "never";
            }
            // nixpkgs.lib.optionalAttrs pkgs.stdenv.isLinux {
              # manylinux wheels (duckdb, grpcio) link against libstdc++ and zlib.
              LD_LIBRARY_PATH = nixpkgs.lib.makeLibraryPath [
                pkgs.stdenv.cc.cc.lib
                pkgs.zlib
              ];
            };
            shellHook = ''
              export DAGSTER_HOME="$PWD/dagster_home"
              export DBT_DUCKDB_PATH="$PWD/analytics_dbt/data/analytics.duckdb"
              export DBT_LANDING_ZONE="$PWD/analytics_dbt/landing"
              uv sync --frozen --group dev
              source .venv/bin/activate
            '';
          };
        }
      );

      formatter = forAllSystems (pkgs: pkgs.nixfmt-rfc-style);
    };
}
