# The hyperhive package: the Cargo workspace's binaries (hive-c0re, hive-ag3nt,
# hive-m1nd, hive-model-sim) built with the dashboard's front end (web/, built
# from web/package-lock.json) in web/dist, where hive-c0re's build takes it from.
{ lib, rustPlatform, buildNpmPackage, importNpmLock }:

let
  version = "0.1.0";

  dashboard = buildNpmPackage {
    pname = "hyperhive-dashboard";
    inherit version;
    src = ../web;
    npmDeps = importNpmLock { npmRoot = ../web; };
    npmConfigHook = importNpmLock.npmConfigHook;
    installPhase = ''
      runHook preInstall
      cp -r dist $out
      runHook postInstall
    '';
  };
in
rustPlatform.buildRustPackage {
  pname = "hyperhive";
  inherit version;

  src = lib.fileset.toSource {
    root = ../.;
    fileset = lib.fileset.unions [
      ../Cargo.toml
      ../Cargo.lock
      ../crates
      ../web
    ];
  };
  cargoLock.lockFile = ../Cargo.lock;

  preBuild = ''
    rm -rf web/dist
    cp -r ${dashboard} web/dist
    chmod -R u+w web/dist
  '';

  # The tests run the claude CLI, systemd-nspawn and a browser: scripts/test.sh runs them.
  doCheck = false;

  passthru = { inherit dashboard; };

  meta = {
    description = "A hive of Claude Code agents on one Linux host";
    license = lib.licenses.mit;
    mainProgram = "hive-c0re";
    platforms = lib.platforms.linux;
  };
}
