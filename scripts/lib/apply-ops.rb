#!/usr/bin/env ruby
# apply-ops.rb MANIFEST OPS_FILE... : prints MANIFEST with the ops files applied.
#
# A fallback for machines without the bosh CLI (scripts/generate-bosh-lite-manifests prefers
# `bosh interpolate`). It implements the part of BOSH's ops-file format (go-patch) that ops
# files use: "replace" and "remove"; path tokens /key, /name=value, /index, /- (append), a
# trailing ? that makes a token and every one after it optional (created when missing on
# replace, skipped on remove), and the ~1 (/) and ~0 (~) escapes. ((variables)) stay as
# they are, as `bosh interpolate` leaves them without a vars store.
require "yaml"

module ApplyOps
  Token = Struct.new(:kind, :key, :value, :index, :optional, :text)

  def self.parse(path)
    raise ArgumentError, "path #{path.inspect} must start with /" unless path.start_with?("/")
    return [] if path == "/"
    optional = false
    path[1..].split("/", -1).map do |raw|
      text = raw
      if raw.end_with?("?")
        optional = true
        raw = raw.chomp("?")
      end
      raw = raw.gsub("~1", "/").gsub("~0", "~")
      if raw == "-"
        Token.new(:append, nil, nil, nil, optional, text)
      elsif raw.match?(/\A-?\d+\z/)
        Token.new(:index, nil, nil, raw.to_i, optional, text)
      elsif raw.include?("=")
        key, value = raw.split("=", 2)
        Token.new(:match, key, value, nil, optional, text)
      else
        Token.new(:key, raw, nil, nil, optional, text)
      end
    end
  end

  def self.fail(tokens, upto, msg)
    shown = "/" + tokens[0..upto].map(&:text).join("/")
    raise "#{msg} at #{shown}"
  end

  def self.matches(array, tok)
    array.each_index.select { |i| array[i].is_a?(Hash) && array[i][tok.key].to_s == tok.value }
  end

  def self.empty_for(tok)
    %i[match index append].include?(tok.kind) ? [] : {}
  end

  # Walks to the parent of the last token. Returns nil when an optional part is missing and
  # create is false (a remove of something that is not there).
  def self.parent(doc, tokens, create)
    node = doc
    tokens[0...-1].each_with_index do |tok, i|
      nxt = tokens[i + 1]
      case tok.kind
      when :key
        fail(tokens, i, "expected a map") unless node.is_a?(Hash)
        unless node.key?(tok.key) && !node[tok.key].nil?
          return nil if tok.optional && !create
          fail(tokens, i, "no key #{tok.key.inspect}") unless tok.optional
          node[tok.key] = empty_for(nxt)
        end
        node = node[tok.key]
      when :match
        fail(tokens, i, "expected a list") unless node.is_a?(Array)
        found = matches(node, tok)
        fail(tokens, i, "#{found.size} items match") if found.size > 1
        if found.empty?
          return nil if tok.optional && !create
          fail(tokens, i, "no item with #{tok.key}=#{tok.value}") unless tok.optional
          node << { tok.key => tok.value }
          found = [node.size - 1]
        end
        node = node[found[0]]
      when :index
        fail(tokens, i, "expected a list") unless node.is_a?(Array)
        fail(tokens, i, "index out of range") if tok.index >= node.size || tok.index < -node.size
        node = node[tok.index]
      when :append
        fail(tokens, i, "expected a list") unless node.is_a?(Array)
        node << empty_for(nxt)
        node = node[-1]
      end
    end
    node
  end

  def self.replace(doc, tokens, value)
    return value if tokens.empty?
    node = parent(doc, tokens, true)
    tok = tokens[-1]
    last = tokens.size - 1
    case tok.kind
    when :key
      fail(tokens, last, "expected a map") unless node.is_a?(Hash)
      node[tok.key] = value
    when :match
      fail(tokens, last, "expected a list") unless node.is_a?(Array)
      found = matches(node, tok)
      fail(tokens, last, "#{found.size} items match") if found.size > 1
      if found.empty?
        fail(tokens, last, "no item with #{tok.key}=#{tok.value}") unless tok.optional
        node << value
      else
        node[found[0]] = value
      end
    when :index
      fail(tokens, last, "expected a list") unless node.is_a?(Array)
      fail(tokens, last, "index out of range") if tok.index >= node.size || tok.index < -node.size
      node[tok.index] = value
    when :append
      fail(tokens, last, "expected a list") unless node.is_a?(Array)
      node << value
    end
    doc
  end

  def self.remove(doc, tokens)
    raise "cannot remove the whole document" if tokens.empty?
    node = parent(doc, tokens, false)
    return doc if node.nil?
    tok = tokens[-1]
    last = tokens.size - 1
    case tok.kind
    when :key
      fail(tokens, last, "expected a map") unless node.is_a?(Hash)
      fail(tokens, last, "no key #{tok.key.inspect}") unless node.key?(tok.key) || tok.optional
      node.delete(tok.key)
    when :match
      fail(tokens, last, "expected a list") unless node.is_a?(Array)
      found = matches(node, tok)
      fail(tokens, last, "#{found.size} items match") if found.size > 1
      fail(tokens, last, "no item with #{tok.key}=#{tok.value}") if found.empty? && !tok.optional
      node.delete_at(found[0]) unless found.empty?
    when :index
      fail(tokens, last, "expected a list") unless node.is_a?(Array)
      node.delete_at(tok.index)
    else
      fail(tokens, last, "cannot remove /-")
    end
    doc
  end

  def self.apply(doc, ops, source)
    raise "#{source}: an ops file is a list of operations" unless ops.is_a?(Array)
    ops.each_with_index do |op, n|
      begin
        tokens = parse(op.fetch("path"))
        doc =
          case op.fetch("type")
          when "replace" then replace(doc, tokens, Marshal.load(Marshal.dump(op["value"])))
          when "remove" then remove(doc, tokens)
          else raise "unsupported type #{op["type"].inspect}"
          end
      rescue StandardError => e
        raise "#{source}: operation #{n + 1} (#{op["type"]} #{op["path"]}): #{e.message}"
      end
    end
    doc
  end
end

if $PROGRAM_NAME == __FILE__
  if ARGV.empty?
    warn "usage: apply-ops.rb MANIFEST [OPS_FILE...]"
    exit 2
  end
  begin
    doc = YAML.safe_load(File.read(ARGV[0]), aliases: true)
    ARGV[1..].each do |path|
      doc = ApplyOps.apply(doc, YAML.safe_load(File.read(path), aliases: true), path)
    end
    print YAML.dump(doc)
  rescue StandardError => e
    warn "apply-ops: #{e.message}"
    exit 1
  end
end
