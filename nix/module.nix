# NixOS module: services.hyperhive runs `hive-c0re serve` as the service that
# contrib/systemd/hyperhive.service describes. The unit file is read and used
# here as it is (only ExecStart's directory changes), so the two cannot drift;
# `settings` becomes /etc/hyperhive/hive.toml, which serve reads by default.
{ config, lib, pkgs, ... }:

let
  cfg = config.services.hyperhive;
  toml = pkgs.formats.toml { };
  configFile = toml.generate "hive.toml" cfg.settings;

  # The unit as { Unit = { Key = "value"; }; Service = ...; Install = ...; };
  # a key given twice becomes a list of its values.
  parseUnit = text:
    let
      lines = builtins.filter
        (l: builtins.isString l && l != "" && builtins.substring 0 1 l != "#")
        (builtins.split "\n" text);
      step = acc: line:
        let
          section = builtins.match "\\[([A-Za-z]+)]" line;
          entry = builtins.match "([A-Za-z]+)=(.*)" line;
        in
        if section != null then
          acc // { current = builtins.head section; }
        else if entry != null && acc.current != null then
          let
            key = builtins.elemAt entry 0;
            value = builtins.elemAt entry 1;
            fields = acc.sections.${acc.current} or { };
            old = fields.${key} or null;
            new =
              if old == null then value
              else if builtins.isList old then old ++ [ value ]
              else [ old value ];
          in
          acc // { sections = acc.sections // { ${acc.current} = fields // { ${key} = new; }; }; }
        else
          throw "contrib/systemd/hyperhive.service: cannot read the line `${line}`";
    in
    (builtins.foldl' step { current = null; sections = { }; } lines).sections;

  unit = parseUnit (builtins.readFile ../contrib/systemd/hyperhive.service);
  words = s: builtins.filter (w: builtins.isString w && w != "") (builtins.split " +" s);
  install = unit.Install or { };
in
{
  options.services.hyperhive = {
    enable = lib.mkEnableOption "hyperhive, a hive of Claude Code agents (hive-c0re serve)";

    package = lib.mkOption {
      type = lib.types.package;
      description = "The hyperhive package: hive-c0re, hive-ag3nt and hive-m1nd, with the dashboard built in.";
    };

    claudePackage = lib.mkOption {
      type = lib.types.package;
      default = pkgs.claude-code;
      defaultText = lib.literalExpression "pkgs.claude-code";
      description = "The claude CLI the agents run, put on the service's PATH (nixpkgs marks claude-code unfree: allow it, or give another package).";
    };

    settings = lib.mkOption {
      type = toml.type;
      default = { };
      example = {
        runtime = "nspawn";
        dashboard = "127.0.0.1:7878";
        inbox_cap = 10000;
      };
      description = "The contents of /etc/hyperhive/hive.toml: each key is a flag of hive-c0re serve with `_` for `-`; `hive-c0re serve --print-config` lists them with their values.";
    };
  };

  config = lib.mkIf cfg.enable {
    assertions = [{
      assertion = builtins.attrNames install == [ "WantedBy" ];
      message = "contrib/systemd/hyperhive.service: the module knows only WantedBy in [Install]";
    }];

    # host.sock's group: its members may use the hive-c0re CLI.
    users.groups.hive-admin = { };

    environment.systemPackages = [ cfg.package ];
    environment.etc."hyperhive/hive.toml".source = configFile;

    systemd.services.hyperhive = {
      description = unit.Unit.Description;
      after = words (unit.Unit.After or "");
      wants = words (unit.Unit.Wants or "");
      wantedBy = words (install.WantedBy or "");
      unitConfig = removeAttrs unit.Unit [ "Description" "After" "Wants" ];
      # systemd-nspawn and nsenter for the containers, pasta for their network and nft to keep
      # it off the host's own networks, git for config repos, claude for the agents.
      path = [ pkgs.systemd pkgs.util-linux pkgs.passt pkgs.nftables pkgs.git cfg.claudePackage ];
      restartTriggers = [ configFile ];
      serviceConfig = unit.Service // {
        ExecStart = builtins.replaceStrings [ "/usr/local/bin/" ] [ "${cfg.package}/bin/" ] unit.Service.ExecStart;
      };
    };
  };
}
