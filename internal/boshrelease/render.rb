#!/usr/bin/env ruby
# Renders one BOSH job's templates outside a BOSH director, for the release's tests.
#
# BOSH itself renders job templates with the bosh-template gem (Bosh::Template::Renderer and
# EvaluationContext). That gem is not packaged by Debian, so this file provides the same
# helpers templates use: p, if_p, spec, link, if_link, with the same rules:
#   - only properties declared in the job's spec are visible, with the spec's defaults;
#   - p("a.b") of a property that is neither set nor defaulted raises, naming the property;
#   - if_p yields only when every named property has a value.
#
# Input (JSON on stdin):
#   {"job_dir": "...", "out_dir": "...", "properties": {...nested...},
#    "spec": {"name": "...", "address": "...", ...},
#    "links": {"name": {"properties": {...}, "instances": [{"address": "..."}], "address": "..."}}}
# Every template listed in the job spec is rendered to out_dir/<destination>. On failure the
# program exits 1 with "<template>: <error>" on stderr.
require "erb"
require "json"
require "yaml"
require "fileutils"

module NetmanRender
  class UnknownProperty < StandardError
    def initialize(names)
      super("Can't find property '#{Array(names).join("', '")}'")
    end
  end

  def self.dig(hash, dotted)
    dotted.split(".").reduce(hash) do |node, key|
      return nil unless node.is_a?(Hash) && node.key?(key)
      node[key]
    end
  end

  def self.assign(hash, dotted, value)
    keys = dotted.split(".")
    last = keys.pop
    node = keys.reduce(hash) { |h, k| h[k] ||= {} }
    node[last] = value
  end

  # BOSH's view of a job's properties: every declared property, set or defaulted.
  def self.effective_properties(declared, given)
    result = {}
    (declared || {}).each do |name, definition|
      value = dig(given || {}, name)
      value = (definition || {})["default"] if value.nil?
      assign(result, name, value) unless value.nil?
    end
    result
  end

  # What if_p and link.if_p return, so `.else { }` can follow them as in BOSH.
  class ActiveElse
    def else
      yield
    end
  end

  class InactiveElse
    def else; end
  end

  module PropertyLookup
    def p(*args)
      names = Array(args[0])
      names.each do |name|
        value = NetmanRender.dig(@properties, name)
        return value unless value.nil?
      end
      return args[1] if args.length == 2
      raise UnknownProperty.new(names)
    end

    def if_p(*names)
      values = names.map { |name| NetmanRender.dig(@properties, name) }
      return ActiveElse.new if values.any?(&:nil?)
      yield(*values)
      InactiveElse.new
    end
  end

  # A read-only record with one method per key, like the spec and instance objects BOSH
  # hands to templates.
  class Record
    def initialize(data)
      @data = data
    end

    def method_missing(name, *args)
      return @data[name.to_s] if args.empty? && @data.key?(name.to_s)
      super
    end

    def respond_to_missing?(name, include_private = false)
      @data.key?(name.to_s) || super
    end
  end

  class Link
    include PropertyLookup
    attr_reader :instances, :address

    def initialize(data)
      @properties = data["properties"] || {}
      @instances = (data["instances"] || []).map { |i| Record.new(i) }
      @address = data["address"]
    end
  end

  class Context
    include PropertyLookup
    attr_reader :spec

    def initialize(properties, spec, links)
      @properties = properties
      @spec = Record.new(spec.merge("properties" => properties))
      @links = links
    end

    def link(name)
      data = @links[name]
      raise "Can't find link '#{name}'" if data.nil?
      Link.new(data)
    end

    def if_link(name)
      data = @links[name]
      return ActiveElse.new if data.nil?
      yield Link.new(data)
      InactiveElse.new
    end

    def get_binding
      binding
    end
  end
end

request = JSON.parse($stdin.read)
job_dir = request.fetch("job_dir")
out_dir = request.fetch("out_dir")
job_spec = YAML.safe_load(File.read(File.join(job_dir, "spec")))
properties = NetmanRender.effective_properties(job_spec["properties"], request["properties"])
spec = { "name" => job_spec["name"], "deployment" => "test", "index" => 0, "id" => "test-id",
         "az" => "z1", "bootstrap" => true, "address" => "10.0.0.10", "ip" => "10.0.0.10" }
spec.merge!(request["spec"] || {})

(job_spec["templates"] || {}).each do |source, destination|
  begin
    context = NetmanRender::Context.new(properties, spec, request["links"] || {})
    erb = ERB.new(File.read(File.join(job_dir, "templates", source)), trim_mode: "-")
    erb.filename = source
    output = erb.result(context.get_binding)
  rescue StandardError, ScriptError => e
    warn "#{source}: #{e.message}"
    exit 1
  end
  path = File.join(out_dir, destination)
  FileUtils.mkdir_p(File.dirname(path))
  File.write(path, output)
end
