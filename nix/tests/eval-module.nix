# Evaluates nix/module.nix without nixpkgs (not reachable where the tests run):
# the few parts of `lib` and `pkgs` it uses are stubbed here, and the module
# system is reduced to its core (option defaults, overlaid with a user's
# settings). crates/hive-c0re/tests/server.rs compares the result with the
# unit file:
#   nix-instantiate --eval --strict --json nix/tests/eval-module.nix
let
  lib = {
    mkOption = option: option;
    mkEnableOption = what: { default = false; description = "Whether to enable ${what}."; };
    mkIf = condition: content: { _type = "if"; inherit condition content; };
    literalExpression = text: { _type = "literalExpression"; inherit text; };
    types.package = "package";
  };
  pkgs = {
    formats.toml = { }: {
      type = "toml";
      # Rendering TOML is nixpkgs' business; the test checks what goes in.
      generate = name: value: { file = name; inherit value; };
    };
    systemd = "/nix/store/stub-systemd";
    util-linux = "/nix/store/stub-util-linux";
    passt = "/nix/store/stub-passt";
    nftables = "/nix/store/stub-nftables";
    git = "/nix/store/stub-git";
    claude-code = "/nix/store/stub-claude-code";
  };

  module = import ../module.nix;

  # The module's config for a user's `services.hyperhive` (options without a default must be given).
  evalWith = user:
    let
      made = module { config.services.hyperhive = cfg; inherit lib pkgs; };
      options = made.options.services.hyperhive;
      withDefault = builtins.filter (name: options.${name} ? default) (builtins.attrNames options);
      cfg = builtins.listToAttrs (map (name: { inherit name; value = options.${name}.default; }) withDefault) // user;
    in
    made.config;

  on = evalWith {
    enable = true;
    package = "/nix/store/stub-hyperhive";
    settings = { runtime = "nspawn"; inbox_cap = 500; };
  };
  off = evalWith { package = "/nix/store/stub-hyperhive"; };
in
{
  enabled = on.condition;
  disabledByDefault = !off.condition;
  inherit (on.content) assertions environment users;
  service = on.content.systemd.services.hyperhive;
}
